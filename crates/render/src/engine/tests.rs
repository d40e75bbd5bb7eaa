use crate::{Options, Vars, render};

fn vars() -> Vars {
    let mut vars = Vars::new();
    vars.set("A", "a");
    vars.set("B", "bb");
    vars.set("EMPTY", "");
    vars
}

fn gnu(template: &str) -> String {
    let out = render(template.as_bytes(), &vars(), &Options::default()).unwrap();
    String::from_utf8(out).unwrap()
}

fn with(opts: Options, template: &str) -> String {
    let out = render(template.as_bytes(), &vars(), &opts).unwrap();
    String::from_utf8(out).unwrap()
}

fn defaults() -> Options {
    Options {
        defaults: true,
        ..Options::default()
    }
}

#[test]
fn gnu_odd_cases() {
    // Each expectation was checked against /usr/bin/envsubst 0.21.
    let cases = [
        ("$", "$"),
        ("${", "${"),
        ("${}", "${}"),
        ("$1 ${1}", "$1 ${1}"),
        ("$A1 ${A}1 $A_B", " a1 "),
        ("$$A", "$a"),
        ("${A:-x}", "${A:-x}"),
        ("${A$B}", "${Abb}"),
        ("${A", "${A"),
        ("$A$", "a$"),
        ("${A}}", "a}"),
        ("${$A}", "${a}"),
        ("$EMPTY|$UNSET|${UNSET}", "||"),
        ("${A B}", "${A B}"),
    ];
    for (template, expected) in cases {
        assert_eq!(gnu(template), expected, "template {template:?}");
    }
}

#[test]
fn bytes_pass_through() {
    let out = render(b"a\0$A\0\xff\xfe$A\r\n${A}", &vars(), &Options::default()).unwrap();
    assert_eq!(out, b"a\0a\0\xff\xfea\r\na");
}

#[test]
fn shell_format_limits_substitution() {
    let opts = Options::with_shell_format(b"$B");
    assert_eq!(
        with(opts.clone(), "$A ${A} $B ${B} ${A"),
        "$A ${A} bb bb ${A"
    );
    let opts = Options {
        defaults: true,
        ..opts
    };
    assert_eq!(with(opts, "${A:-x} ${B:-x} ${C:-x}"), "${A:-x} bb ${C:-x}");
}

#[test]
fn shell_defaults() {
    let cases = [
        ("${A:-x} ${UNSET:-x} ${EMPTY:-x}", "a x x"),
        ("${A-x} ${UNSET-x} ${EMPTY-x}", "a x "),
        ("${A:+x} ${UNSET:+x} ${EMPTY:+x}", "x  "),
        ("${A+x} ${UNSET+x} ${EMPTY+x}", "x  x"),
        ("${U:=one} $U ${U:=two}", "one one one"),
        ("${E=set}${EMPTY=no}.${EMPTY:=yes}$EMPTY", "set.yesyes"),
        ("${UNSET:-$A-${B}}", "a-bb"),
        ("${UNSET:-${X:-${Y:-deep}}}", "deep"),
        ("${UNSET:-}|${A:-}", "|a"),
        ("${A:x}", "${A:x}"),
        ("${A:-unclosed", "${A:-unclosed"),
        ("${A:", "${A:"),
        ("${UNSET:-a}b}", "ab}"),
    ];
    for (template, expected) in cases {
        assert_eq!(
            with(defaults(), template),
            expected,
            "template {template:?}"
        );
    }
}

#[test]
fn nesting_is_capped_without_overflowing_the_stack() {
    let depth = 10_000;
    let template = "${U:-".repeat(depth) + &"}".repeat(depth);
    let out = render(template.as_bytes(), &vars(), &defaults()).unwrap();
    assert!(out.len() > depth, "deep words are left partly as written");
}

#[test]
fn strict_reports_every_problem() {
    let opts = Options {
        no_empty: true,
        defaults: true,
        ..Options::default()
    };
    let template = "a: $A\nb: ${UNSET} and $UNSET\r\nc: é$EMPTY ${NEEDED:?set NEEDED to the $A}\n${Q?}${R:?}${A:?never}\n${UNSET:-fine} ${X:-$INNER}";
    let err = render(template.as_bytes(), &vars(), &opts).unwrap_err();
    insta::assert_snapshot!(err.to_string());
}

#[test]
fn strict_only_applies_to_substituted_names() {
    let opts = Options {
        strict: true,
        only: Some(vec!["A".into()]),
        ..Options::default()
    };
    assert_eq!(with(opts, "$A $UNSET"), "a $UNSET");
}

#[test]
fn empty_is_fine_unless_no_empty() {
    let strict = Options {
        strict: true,
        ..Options::default()
    };
    assert_eq!(with(strict, "[$EMPTY]"), "[]");
}

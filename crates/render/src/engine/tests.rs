use super::{MAX_REFERENCE, MAX_REPORTED};
use crate::{Options, Reason, RenderError, Vars, render};

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

#[test]
fn reports_stop_at_a_thousand_and_count_the_rest() {
    let strict = Options {
        strict: true,
        defaults: true,
        ..Options::default()
    };
    // Unset references and fired `:?` count alike.
    let template = "$U\n".repeat(MAX_REPORTED - 1) + "${R:?msg} $V\n$W$X";
    let Err(RenderError::Missing {
        missing,
        unreported,
        ..
    }) = render(template.as_bytes(), &vars(), &strict)
    else {
        panic!("strict must fail");
    };
    assert_eq!(missing.len(), MAX_REPORTED);
    assert_eq!(unreported, 3);
    let last = &missing[MAX_REPORTED - 1];
    assert_eq!((last.line, last.column), (1000, 1));
    assert_eq!(last.reason, Reason::Required("msg".into()));
    let text = render(b"$U $V", &vars(), &strict).unwrap_err().to_string();
    assert_eq!(
        text,
        "<template>:1:1: U is not set\n<template>:1:4: V is not set"
    );
    let text = render(template.as_bytes(), &vars(), &strict)
        .unwrap_err()
        .to_string();
    assert!(
        text.ends_with("\n<template>:1000:1: R: msg\n<template>: and 3 more, not listed"),
        "{}",
        &text[text.len() - 100..]
    );
}

#[test]
fn a_word_is_bounded_whatever_the_chunks() {
    let fits = "x".repeat(MAX_REFERENCE - "${U:-}".len());
    let within = format!("${{U:-{fits}}}");
    assert_eq!(with(defaults(), &within), fits);
    // One byte more and the `}` is too far: as written, like an unclosed word.
    let beyond = format!("${{U:-{fits}x}}");
    assert_eq!(with(defaults(), &beyond), beyond);
    // Streamed, with the reference across the end of the first chunk, the decisions are the
    // same.
    let filler = "f".repeat(250_000);
    for template in [&within, &beyond].map(|t| filler.clone() + t) {
        let mut streamed = Vec::new();
        let trickle =
            std::io::Read::chain(&template.as_bytes()[..5000], &template.as_bytes()[5000..]);
        crate::render_stream(
            trickle,
            &mut streamed,
            &vars(),
            &defaults(),
            &crate::Origin::Stdin,
        )
        .unwrap();
        assert_eq!(
            streamed,
            render(template.as_bytes(), &vars(), &defaults()).unwrap()
        );
    }
}

#[test]
fn assignments_and_messages_are_bounded() {
    let mut vars = vars();
    vars.set("BIG", "b".repeat(600 * 1024));
    let fails = |template: &str| match render(template.as_bytes(), &vars, &defaults()) {
        Err(RenderError::Missing { missing, .. }) => missing,
        other => panic!("{template:.40}: {:?}", other.map(|out| out.len())),
    };
    // One value over the budget, through references to a large value.
    let missing = fails("${A1:=x} ${A2:=$BIG$BIG} $A2");
    assert_eq!(missing.len(), 1);
    assert_eq!((missing[0].name.as_str(), missing[0].column), ("A2", 10));
    assert_eq!(missing[0].reason, Reason::TooMuchAssigned);
    assert_eq!(
        missing[0].to_string(),
        "1:10: A2: the values assigned with := would exceed 1 MiB in all"
    );
    // Many distinct assignments, each small, add up.
    let many: String = (0..40_000)
        .map(|i| format!("${{V{i}:=0123456789abcdef0123456789}}"))
        .collect();
    let missing = fails(&many);
    assert!(
        missing.iter().all(|m| m.reason == Reason::TooMuchAssigned),
        "{:?}",
        &missing[0]
    );
    // Under the budget, and reassigning one name, is fine.
    let fine: String = (0..1000).map(|_| "${E:=0123456789}${E:+x}").collect();
    assert!(render(fine.as_bytes(), &vars, &defaults()).is_ok());
    // A name in a report is cut too.
    let long = "N".repeat(1000);
    let missing = fails(&format!("${{{long}:?}}"));
    assert_eq!(missing[0].name, "N".repeat(256) + "...");
    // A message is cut.
    let missing = fails("${U:?$BIG}");
    let Reason::Required(message) = &missing[0].reason else {
        panic!("{missing:?}");
    };
    assert_eq!(message.len(), 4096 + 3);
    assert!(message.ends_with("bbb..."));
}

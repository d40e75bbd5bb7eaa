//! `render` against the real GNU envsubst: same stdout bytes and exit status on every input.

mod common;

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{GNU, Outcome, RENDER, args, env, require_gnu, run, status_code};
use proptest::prelude::*;

fn base_env() -> Vec<(String, Vec<u8>)> {
    let long_name = "V".repeat(70_000);
    let mut env = env(&[
        ("A", b"a"),
        ("B", b"bb"),
        ("EMPTY", b""),
        ("ABC", b"<abc>"),
        ("FALCO_SERVICE_CLUSTERIP", b"10.96.0.7"),
        ("_", b"underscore"),
        ("A1", b"a-one"),
        ("DOLLARS", b"$A ${B} $"),
        ("BYTES", b"\xff\xfe\x80 caf\xc3\xa9 \x01"),
        ("LINES", b"one\ntwo\r\n"),
    ]);
    env.push((long_name, b"long".to_vec()));
    env
}

/// Asserts identical stdout and status; `stdout_too: false` for --help/--version, whose
/// text legitimately differs.
fn same(args: &[OsString], env: &[(String, Vec<u8>)], stdin: &[u8], stdout_too: bool) {
    let gnu = run(GNU, args, env, stdin);
    let ours = run(RENDER, args, env, stdin);
    let show =
        |o: &Outcome| String::from_utf8_lossy(&o.stdout[..o.stdout.len().min(300)]).into_owned();
    if stdout_too {
        assert!(
            gnu.outcome == ours.outcome,
            "args {args:?}, stdin {:?}\nGNU:    {} {:?} (stderr {:?})\nrender: {} {:?} (stderr {:?})",
            String::from_utf8_lossy(&stdin[..stdin.len().min(300)]),
            gnu.outcome.status,
            show(&gnu.outcome),
            gnu.stderr,
            ours.outcome.status,
            show(&ours.outcome),
            ours.stderr,
        );
    } else {
        assert_eq!(gnu.outcome.status, ours.outcome.status, "args {args:?}");
    }
}

fn formats() -> Vec<Vec<OsString>> {
    vec![
        args(&[]),
        args(&["$A"]),
        args(&["${B} $EMPTY $UNSET ${ABC"]),
        args(&["$FALCO_SERVICE_CLUSTERIP"]),
        args(&["$$A ${$B} $_ $A1"]),
        args(&[""]),
        args(&["-"]),
        args(&["--", "$B"]),
    ]
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("tests/corpus")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    let mut corpus: Vec<_> = files
        .into_iter()
        .map(|p| (p.display().to_string(), fs::read(&p).expect("corpus file")))
        .collect();
    assert!(corpus.len() >= 10, "corpus went missing: {corpus:?}");
    // Generated rather than committed: long lines, and names longer than any read buffer.
    let long_name = "V".repeat(70_000);
    let long = format!(
        "{x}$A{y}\n${n} ${{{n}}} ${{{n}\n{a}\n",
        x = "x".repeat(300_000),
        y = "y".repeat(300_000),
        n = long_name,
        a = "$A".repeat(50_000),
    );
    corpus.push(("<generated long>".into(), long.into_bytes()));
    corpus.push(("<empty>".into(), Vec::new()));
    corpus
}

#[test]
fn corpus_matches_gnu() {
    require_gnu();
    let env = base_env();
    for (_name, input) in corpus() {
        for format in formats() {
            same(&format, &env, &input, true);
        }
    }
}

#[test]
fn command_lines_match_gnu() {
    require_gnu();
    let env = base_env();
    let stdin = b"$A ${B} $UNSET\n";
    let exact: &[&[&str]] = &[
        &["-v", "$A ${B} $A ${C $D $$E ${F"],
        &["-v", ""],
        &["$A", "-v"],
        &["--variables", "$A"],
        &["--va", "$B"],
        &["-v"],
        &["-v", "$A", "$B"],
        &["$A", "$B"],
        &["-x"],
        &["-vx", "$A"],
        &["--v"],
        &["--help=x"],
        &["--variables=x"],
        &["--nonsense"],
        &["-v", "--", "-v"],
        &["--", "-v"],
        &["$A", "--", "$B"],
    ];
    for list in exact {
        same(&args(list), &env, stdin, true);
    }
    // Help and version texts differ; their exit status and precedence must not.
    let status_only: &[&[&str]] = &[
        &["-h"],
        &["--help"],
        &["-V"],
        &["--version"],
        &["-hV"],
        &["-h", "$A", "$B"],
        &["-V", "-v"],
        &["--he"],
        &["--vers"],
    ];
    for list in status_only {
        same(&args(list), &env, stdin, false);
    }
    let mut posix = env.clone();
    posix.push(("POSIXLY_CORRECT".into(), b"1".to_vec()));
    same(&args(&["$A", "-v"]), &posix, stdin, true);
    same(&args(&["-v", "$A"]), &posix, stdin, true);
    // Non-UTF-8 argument bytes.
    same(
        &[OsString::from_vec(b"$A \xff ${B}".to_vec())],
        &env,
        stdin,
        true,
    );
    same(
        &[
            OsString::from("-v"),
            OsString::from_vec(b"\xff$A\xfe".to_vec()),
        ],
        &env,
        stdin,
        true,
    );
}

/// GNU's getopt table (`help`/`h`, `variables`/`v`, `version`/`V`), each option given twice in
/// every spelling: getopt_long takes a repeated option as one, so must we.
#[test]
fn repeated_options_match_gnu() {
    require_gnu();
    let env = base_env();
    let stdin = b"$A ${B}\n";
    for (short, long) in [("-h", "--help"), ("-v", "--variables"), ("-V", "--version")] {
        let letter = &short[1..];
        let clustered = format!("-{letter}{letter}");
        let abbreviated = &long[..4];
        let twice: [Vec<&str>; 6] = [
            vec![short, short],
            vec![&clustered],
            vec![long, long],
            vec![short, long],
            vec![long, abbreviated],
            vec![abbreviated, short, short],
        ];
        for list in twice {
            let mut list = args(&list);
            let once;
            if short == "-v" {
                // -v lists the variables of its operand; once and twice must print the same.
                list.push("$A ${B} $A".into());
                once = args(&[short, "$A ${B} $A"]);
                same(&list, &env, stdin, true);
            } else {
                // Help and version texts differ from GNU's: compare each with itself given once.
                once = args(&[short]);
                same(&list, &env, stdin, false);
            }
            for program in [GNU, RENDER] {
                assert_eq!(
                    run(program, &list, &env, stdin).outcome,
                    run(program, &once, &env, stdin).outcome,
                    "{program} {list:?}"
                );
            }
        }
    }
}

/// Runs `sh -c SCRIPT program` for both programs; the script sees the program as "$0".
fn same_in_shell(script: &str, stdin: &[u8]) {
    let go = |program: &str| {
        let mut child = Command::new("sh")
            .args(["-c", script, program])
            .env_clear()
            .env("A", "a")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        {
            use std::io::Write;
            let _ = child.stdin.take().expect("piped").write_all(stdin);
        }
        let mut out = Vec::new();
        child
            .stdout
            .take()
            .expect("piped")
            .read_to_end(&mut out)
            .expect("read");
        (out, status_code(child.wait().expect("wait")))
    };
    let (gnu, ours) = (go(GNU), go(RENDER));
    assert_eq!(
        gnu,
        ours,
        "script {script:?}, stdin {:?}",
        String::from_utf8_lossy(stdin)
    );
}

#[test]
fn io_errors_match_gnu() {
    require_gnu();
    for stdin in [&b""[..], b"$A\n", b"x"] {
        same_in_shell(r#""$0" >/dev/full; echo "status $?""#, stdin);
        same_in_shell(r#""$0" >&-; echo "status $?" >&2; echo "status $?""#, stdin);
        same_in_shell(r#""$0" -v '$A' >/dev/full; echo "status $?""#, stdin);
        same_in_shell(r#""$0" -V >/dev/full; echo "status $?""#, stdin);
        same_in_shell(r#""$0" -h >/dev/full; echo "status $?""#, stdin);
    }
    same_in_shell(r#""$0" < /; echo "status $?""#, b"");
    same_in_shell(r#""$0" <&-; echo "status $?""#, b"");
    same_in_shell(r#""$0" -v '$A' <&-; echo "status $?""#, b"");
    // The reader of the pipe goes away: both die of SIGPIPE, as `yes` does.
    let sigpipe = r#"exec 3>&1; ( "$0" </dev/zero; echo "status $?" >&3 ) | head -c 1 >/dev/null"#;
    same_in_shell(sigpipe, b"");
}

/// Bytes biased toward what the scanner cares about.
fn template_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        5 => Just(b'$'),
        2 => Just(b'{'),
        2 => Just(b'}'),
        8 => prop::sample::select(&b"ABab_019C"[..]),
        1 => Just(b'\n'),
        1 => Just(b'\r'),
        1 => Just(0u8),
        1 => Just(b':'),
        1 => Just(b'-'),
        1 => 0x80u8..=0xff,
        2 => any::<u8>(),
    ]
}

fn format_byte() -> impl Strategy<Value = u8> {
    // Arguments cannot hold NUL; a leading `-` would make it an option (tested above).
    template_byte().prop_filter("no NUL in arguments", |&b| b != 0)
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "A", "B", "a", "b", "_", "AB", "A1", "B_", "ab", "C", "Aa0",
    ])
    .prop_map(str::to_owned)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        template_byte().prop_filter("env values cannot hold NUL", |&b| b != 0),
        0..6,
    )
}

fn environment() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec((name(), value()), 0..8)
}

fn shell_format() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(
        prop::collection::vec(format_byte(), 0..16)
            .prop_filter("a leading - is an option", |f| f.first() != Some(&b'-')),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_inputs_match_gnu(
        stdin in prop::collection::vec(template_byte(), 0..200),
        env in environment(),
        format in shell_format(),
    ) {
        require_gnu();
        let args: Vec<OsString> = format.into_iter().map(OsString::from_vec).collect();
        same(&args, &env, &stdin, true);
    }

    #[test]
    fn random_variable_listings_match_gnu(format in prop::collection::vec(format_byte(), 0..40)) {
        require_gnu();
        let args = vec![OsString::from("-v"), OsString::from_vec(format)];
        same(&args, &[], b"", true);
    }
}

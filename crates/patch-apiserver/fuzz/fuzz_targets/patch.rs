//! Arbitrary bytes must never panic any entry point; whatever patches must also
//! re-patch to itself and revert to a parsable manifest, and our own errors must
//! never be internal ones.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patch_apiserver::{
    Mode, PatchError, PatchOptions, check, check_audit_dir, inspect, is_audit_related,
    is_our_flag, our_flags, patch, revert,
};

fn not_internal<T>(r: &Result<T, PatchError>, what: &str, input: &str) {
    if let Err(e @ PatchError::Internal(_)) = r {
        panic!("{what}: {e}\ninput: {input:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let inspected = inspect(text);
    let _ = check_audit_dir(text, text.lines().next());
    if let Ok(i) = &inspected {
        let o = PatchOptions::new(Mode::Static);
        let _ = our_flags(&i.apiserver_args, &o);
        for a in &i.apiserver_args {
            let _ = (is_our_flag(a, &o), is_audit_related(a));
        }
    }
    // A byte order mark changes nothing but itself, and stays.
    let bom = format!("\u{feff}{text}");
    let mut o = PatchOptions::new(Mode::Static);
    o.kube_version = Some("v1.16.0".parse().expect("valid version"));
    if !text.starts_with('\u{feff}') {
        match (patch(text, &o), patch(&bom, &o)) {
            (Ok(a), Ok(b)) => assert_eq!(format!("\u{feff}{}", a.text), b.text, "input: {text:?}"),
            (Err(a), Err(b)) => assert_eq!(a, b, "input: {text:?}"),
            (a, b) => panic!("a BOM changed the outcome: {a:?} / {b:?}\ninput: {text:?}"),
        }
    }
    for mode in Mode::ALL {
        let mut opts = PatchOptions::new(mode);
        opts.kube_version = Some("v1.16.0".parse().expect("valid version"));
        let patched = patch(text, &opts);
        not_internal(&patched, "patch", text);
        let _ = check(text, &opts);
        let reverted = revert(text, &opts);
        not_internal(&reverted, "revert", text);
        if let Ok(p) = patched {
            let again = patch(&p.text, &opts);
            match again {
                Ok(a) => assert_eq!(a.text, p.text, "not idempotent\ninput: {text:?}"),
                Err(e) => panic!("patched output does not patch again: {e}\ninput: {text:?}"),
            }
            let back = revert(&p.text, &opts);
            not_internal(&back, "revert of patched", text);
            if let Err(e) = back {
                panic!("patched output does not revert: {e}\ninput: {text:?}");
            }
        }
    }
});

//! laporctl's contract with operators: codes first, clear errors, exit status 2 on misuse.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_laporctl"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn units_list_puts_the_code_first() {
    let (code, out, _) = run(&["units", "list"]);
    assert_eq!(code, 0);
    let codes: Vec<&str> = out
        .lines()
        .map(|l| l.split('\t').next().unwrap_or(""))
        .collect();
    for expected in [
        "LINJAMSOS",
        "REHSOS",
        "DAYASOS",
        "ITJEN",
        "PUSDATIN",
        "HUMAS",
        "SETJEN",
        "SENTRA_WYATA_GUNA",
    ] {
        assert!(
            codes.contains(&expected),
            "{expected} missing from {codes:?}"
        );
    }
    assert!(codes.len() >= 30);
}

#[test]
fn misuse_is_explained() {
    let (code, _, err) = run(&["units", "provision", "NOBODY"]);
    assert_eq!(code, 2);
    assert!(err.contains("NOBODY is not in the unit registry"), "{err}");
    let (code, _, err) = run(&["units", "provision", "lower.case"]);
    assert_eq!(code, 2);
    assert!(err.contains("unit code must be"), "{err}");
    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown command") && err.contains("usage:"),
        "{err}"
    );
    let (code, _, err) = run(&["units", "followup", "LINJAMSOS", "0000-0000-0000", "done"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("acknowledged, in_progress, delegated, resolved, returned"),
        "{err}"
    );
    let (code, _, err) = run(&["parked", "redrive", "abc"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a parked message id"), "{err}");
}

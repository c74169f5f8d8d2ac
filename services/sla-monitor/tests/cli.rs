//! `sla-monitor due`: the operators' deadline calculator, and how we check the rule.

use std::process::Command;

fn due(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sla-monitor"))
        .arg("due")
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prints_the_deadline_in_the_zone_asked_for() {
    let (ok, out, _) = due(&[
        "--start",
        "2026-12-07T10:00:00+07:00",
        "--working-days",
        "3",
    ]);
    assert!(ok);
    assert_eq!(out, "2026-12-10T23:59:59+07:00");
    // Christmas week: 24 December is cuti bersama, 25 December Natal.
    let (_, out, _) = due(&[
        "--start",
        "2026-12-23T08:00:00+07:00",
        "--working-days",
        "3",
    ]);
    assert_eq!(out, "2026-12-30T23:59:59+07:00");
    let (_, out, _) = due(&[
        "--start",
        "2026-12-07T23:30:00+07:00",
        "--working-days",
        "1",
        "--zone",
        "Asia/Jayapura",
    ]);
    assert_eq!(out, "2026-12-09T23:59:59+09:00");
}

#[test]
fn warns_about_years_without_complete_data() {
    let (ok, _, err) = due(&[
        "--start",
        "2026-12-28T08:00:00+07:00",
        "--working-days",
        "5",
    ]);
    assert!(ok);
    assert!(err.contains("2027 is incomplete"), "{err}");
}

#[test]
fn bad_arguments_are_named() {
    let (ok, _, err) = due(&["--start", "yesterday", "--working-days", "3"]);
    assert!(
        !ok && err.contains("--start") && err.contains("RFC 3339"),
        "{err}"
    );
    let (ok, _, err) = due(&[
        "--start",
        "2026-12-07T10:00:00+07:00",
        "--working-days",
        "3",
        "--zone",
        "Mars/Olympus",
    ]);
    assert!(!ok && err.contains("--zone"), "{err}");
    let (ok, _, err) = due(&["--start", "2026-12-07T10:00:00+07:00"]);
    assert!(!ok && err.contains("--working-days is required"), "{err}");
}

//! The end-to-end harness itself (`tests/support`): what it does when the binary under test
//! cannot be built.

use std::process::Command;

use strata_suite::check_build;

/// A build that fails is an error with the build's own output, even when a binary from an
/// earlier build exists: testing that one would test stale code and pass for the wrong reason.
#[test]
fn a_failed_build_is_an_error_even_with_an_older_binary_present() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("strata");
    std::fs::write(&stale, b"built from older code").unwrap();

    let failed = Command::new("sh")
        .args(["-c", "echo 'error[E0308]: mismatched types' >&2; exit 101"])
        .output();
    let err = check_build(failed, &stale).expect_err("a failed build was accepted");
    assert!(err.contains("error[E0308]: mismatched types"), "{err}");
    assert!(err.contains(&stale.display().to_string()), "{err}");

    let not_run = Command::new(dir.path().join("no-such-cargo")).output();
    let err = check_build(not_run, &stale).expect_err("a build that could not run was accepted");
    assert!(err.contains("could not run cargo"), "{err}");

    let built = Command::new("sh").args(["-c", "exit 0"]).output();
    assert_eq!(check_build(built, &stale), Ok(()));
}

//! End-to-end harness: drives the sandbox for the tests in `tests/`.

//! Local dev stack (in progress).
fn main() {}

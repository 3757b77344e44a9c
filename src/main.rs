//! `mxgate` command line.
fn main() {}

//! `mxgate`: the command line of [`mxgate::cli`].

use std::process::ExitCode;

/// The process allocator: mimalloc, whose per-thread free lists suit the
/// per-core event loops (glibc's malloc and free were about 15 % of the data
/// plane's instructions; docs/performance.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    mxgate::cli::main()
}

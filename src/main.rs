use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: the hub allocates many small, short-lived buffers
/// (JSON values, headers, messages) across threads, where glibc's arenas spent ~9% of the
/// hub's CPU under load (`perf`, README "NewStore speed").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ihub::cli::main()
}

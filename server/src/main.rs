//! The `opsdeck` binary.

fn main() -> std::process::ExitCode {
    // N.B.: glibc gives every thread that allocates its own malloc arena;
    // with tokio's and sqlx's threads that multiplies idle memory. Two
    // arenas keep the resident size close to what is in use.
    // SAFETY: called first, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    server::cli::main()
}

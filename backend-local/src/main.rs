//! The `vultrino` binary. See `vultrino --help`.

// Many small, short-lived allocations per request (headers, JSON, URLs) across worker threads:
// mimalloc serves them faster than glibc malloc (docs/decisions/0025-mimalloc-allocator.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vultrino_local::cli::main()
}

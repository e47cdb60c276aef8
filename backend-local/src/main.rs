//! The `vultrino` binary. See `vultrino --help`.

fn main() -> std::process::ExitCode {
    vultrino_local::cli::main()
}

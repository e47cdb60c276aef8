//! The `vultrino` binary. See `vultrino --help`.

// Many small, short-lived allocations per request (headers, JSON, URLs) across worker threads:
// mimalloc serves them faster than glibc malloc (docs/decisions/0025-mimalloc-allocator.md),
// through its plain entry points for ordinary alignments (docs/decisions/0131-plain-mimalloc-calls.md).
#[global_allocator]
static GLOBAL: vultrino_alloc::Mimalloc = vultrino_alloc::Mimalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    vultrino_local::cli::main()
}

/// Transparent huge pages off for this process (Linux), unless `MIMALLOC_ALLOW_THP=1` asks for
/// them. mimalloc asks the kernel for huge pages on its arena (`madvise(MADV_HUGEPAGE)`); a 2 MiB
/// page stays resident while any 4 KiB of it is in use, and the kernel's background collapse
/// (khugepaged) fills partly used regions in over time: the soak measured 26 MiB of the 46 MiB
/// an idle server held, and a resident set that rose for 30 minutes under a steady load
/// (docs/decisions/0122-no-transparent-huge-pages.md). Set before the server starts its
/// threads; the flag covers the whole process. A failure (an old kernel) changes nothing else.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none_or(|v| v != "1") {
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}

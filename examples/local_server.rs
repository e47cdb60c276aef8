//! Run the local server from code: memory stores, the real outbound client, 127.0.0.1:7879
//! (or the address given as the first argument), graceful shutdown on Ctrl-C.
//!
//!     cargo run -p vultrino-local --example local_server -- 127.0.0.1:7879
//!
//! The admin password is generated and printed. For everyday use, `vultrino serve` does the same
//! with a durable file store.

use std::path::PathBuf;

use vultrino_core::app::Config;
use vultrino_local::setup::{self, Settings, StoreKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7879".into());
    let settings = Settings {
        data_dir: PathBuf::from("unused-with-memory-store"),
        store: StoreKind::Memory,
        master_key_file: None,
        master_key_source: None,
        config: Config::default(),
    };
    let opened = setup::open(&settings).await?;
    if let Some(pw) = &opened.generated_password {
        println!("admin password (this run only): {}", pw.as_str());
    }
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    vultrino_local::server::serve(
        listener,
        opened.app,
        vultrino_local::server::shutdown_signal(),
    )
    .await?;
    Ok(())
}

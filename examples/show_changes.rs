//! Prints the change documents sdl wrote, one JSON line each, in source commit order.
//! Waits until at least `min` documents are there (or `timeout_secs` passes, exit 1).
//!
//! usage: show_changes MONGODB_URI DATABASE [min] [timeout_secs]

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(uri), Some(database)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: show_changes MONGODB_URI DATABASE [min] [timeout_secs]");
    };
    let min: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let timeout = Duration::from_secs(args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(30));
    let client = mongodb::Client::with_uri_str(uri).await?;
    let changes = client
        .database(database)
        .collection::<Document>("row_changes");
    let deadline = Instant::now() + timeout;
    while changes.count_documents(doc! {}).await? < min {
        if Instant::now() > deadline {
            eprintln!("fewer than {min} change documents after {timeout:?}");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let docs: Vec<Document> = changes
        .find(doc! {})
        .sort(doc! { "meta.file": 1, "meta.pos": 1, "meta.row": 1 })
        .await?
        .try_collect()
        .await?;
    for d in docs {
        println!(
            "{}",
            serde_json::to_string(&mongodb::bson::Bson::Document(d).into_relaxed_extjson())?
        );
    }
    Ok(())
}

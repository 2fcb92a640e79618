//! The tier and the bus on a Redis Cluster of three masters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::bus_tests::{cached, local_store, subscribed};
use super::*;

/// A file path unique to this test process and call, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Relaxed);
        let file = format!("fg-cache-{}-{n}-{name}", std::process::id());
        TempFile(std::env::temp_dir().join(file))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Three cluster-enabled masters sharing the 16384 slots, ready when every node says ok.
/// Servers drop before their files (a live node rewrites its file).
async fn start_cluster() -> (Vec<RedisServer>, Vec<TempFile>) {
    let files: Vec<TempFile> = (0..3).map(|_| TempFile::new("nodes.conf")).collect();
    let nodes: Vec<RedisServer> = files
        .iter()
        .map(|f| {
            let f = f.0.to_string_lossy();
            RedisServer::start_with(&["--cluster-enabled", "yes", "--cluster-config-file", &f])
        })
        .collect();
    let mut conns = Vec::new();
    for (node, (first, last)) in nodes.iter().zip([(0, 5460), (5461, 10922), (10923, 16383)]) {
        let mut conn = raw(node).await;
        let _: () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(first)
            .arg(last)
            .query_async(&mut conn)
            .await
            .unwrap();
        conns.push(conn);
    }
    for node in &nodes[1..] {
        let _: () = redis::cmd("CLUSTER")
            .arg("MEET")
            .arg("127.0.0.1")
            .arg(node.port())
            .query_async(&mut conns[0])
            .await
            .unwrap();
    }
    eventually_within("a formed cluster", Duration::from_secs(10), || {
        let mut conns = conns.clone();
        async move {
            for conn in &mut conns {
                let info = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async::<String>(conn)
                    .await;
                match info {
                    Ok(info)
                        if info.contains("cluster_state:ok")
                            && info.contains("cluster_known_nodes:3") => {}
                    _ => return false,
                }
            }
            true
        }
    })
    .await;
    (nodes, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keeps_each_write_on_one_slot_and_purges_every_master() {
    let (nodes, _files) = start_cluster().await;
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let mut settings = settings_for(RedisDeployment::Cluster(urls));
    settings.groups = 32;
    let tier = connected(settings).await;
    let store = local_store();
    let bus = subscribed(&tier, &store).await;

    let keys: Vec<CacheKey> = (0..24).map(|i| key(&format!("/c/{i}"))).collect();
    for (i, k) in keys.iter().enumerate() {
        let tags: &[&str] = if i % 2 == 0 { &["even"] } else { &[] };
        stored(&tier, k, &tagged(k, "x", tags)).await;
    }
    for k in &keys {
        assert!(body_at(&tier, k).await.is_some());
    }
    let mut per_node = Vec::new();
    for node in &nodes {
        per_node.push(keys_under(node, DEFAULT_PREFIX).await.len());
    }
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() > 1,
        "{per_node:?}"
    );

    assert_eq!(tier.purge_surrogate("even").await.unwrap(), 12);
    assert_eq!(tier.purge_url(&keys[1].url).await.unwrap(), 1);
    assert_eq!(
        tier.purge_prefix("http://example.test/c/1").await.unwrap(),
        5
    );
    assert_eq!(tier.purge_all().await.unwrap(), 6);
    for node in &nodes {
        assert!(keys_under(node, DEFAULT_PREFIX).await.is_empty());
    }

    let k = key("/bus");
    store.insert(&k.digest, entry(&k, "x"));
    bus.publish(&PurgeMessage::Url(k.url.clone()))
        .await
        .unwrap();
    eventually("purged through the cluster", || async {
        !cached(&store, &k)
    })
    .await;
}

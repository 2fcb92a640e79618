//! The store on a Redis Cluster (three masters) and behind a Sentinel.

use std::path::PathBuf;

use super::harness::RedisServer;
use super::*;

/// A file path unique to this test process and call, removed on drop (panics included).
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Relaxed);
        let path = std::env::temp_dir().join(format!("fg-rl-{}-{n}-{name}", std::process::id()));
        TempFile(path)
    }

    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Three cluster-enabled masters sharing the 16384 slots. Fields drop in order: the servers
/// stop before their files go (a live node rewrites its file).
struct Cluster {
    nodes: Vec<RedisServer>,
    _files: Vec<TempFile>,
}

/// A master, its replica and a Sentinel watching them.
struct SentinelGroup {
    master: RedisServer,
    replica: RedisServer,
    sentinel: RedisServer,
    _conf: TempFile,
}

/// Starts a cluster and waits until every node sees it as ok.
async fn start_cluster() -> Cluster {
    let files: Vec<TempFile> = (0..3).map(|_| TempFile::new("nodes.conf")).collect();
    let nodes: Vec<RedisServer> = files
        .iter()
        .map(|f| {
            let f = f.path();
            RedisServer::start_with(&["--cluster-enabled", "yes", "--cluster-config-file", &f])
        })
        .collect();
    let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
    let mut conns = Vec::new();
    for (node, (first, last)) in nodes.iter().zip(ranges) {
        let mut conn = raw(node).await;
        let _: () = ::redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(first)
            .arg(last)
            .query_async(&mut conn)
            .await
            .unwrap();
        conns.push(conn);
    }
    for node in &nodes[1..] {
        let _: () = ::redis::cmd("CLUSTER")
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
                // A node busy joining may answer late or not at all: ask again.
                let Ok(info) = ::redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async::<String>(conn)
                    .await
                else {
                    return false;
                };
                if !(info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    Cluster {
        nodes,
        _files: files,
    }
}

async fn cluster_store(cluster: &Cluster) -> RedisStore {
    let mut s = settings(cluster.nodes[0].url());
    s.mode = RedisMode::Cluster {
        urls: cluster.nodes.iter().map(RedisServer::url).collect(),
    };
    connected_with(s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_counts_every_key_on_its_own_slot() {
    let cluster = start_cluster().await;
    let store = cluster_store(&cluster).await;
    // Keys spread over the three nodes; each one's data stays on one slot.
    for i in 0..12u8 {
        let mut allowed = Vec::new();
        for _ in 0..3 {
            allowed.push(store.check("p", &fixed(2), &[i], 1).await.unwrap().allowed);
        }
        assert_eq!(allowed, [true, true, false], "key {i}");
        let d = store.check("p", &sliding(1), &[i], 1).await.unwrap();
        assert!(d.allowed, "key {i}");
        let lease = store.acquire("p", 1, &[i]).await.unwrap().unwrap();
        assert!(store.acquire("p", 1, &[i]).await.unwrap().is_err());
        drop(lease);
    }
    for i in 0..12u8 {
        let d = store
            .check_batched("p", &sliding(10), BATCH, &[i], 1)
            .await
            .unwrap();
        assert!(d.allowed);
    }
    eventually("batched counts pushed", || async {
        store.stats().pushed_keys >= 12
    })
    .await;
    assert_eq!(store.stats().push_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keeps_counting_on_live_masters_when_one_dies() {
    let mut cluster = start_cluster().await;
    let store = cluster_store(&cluster).await;
    // Two of these twelve keys hash to the slots of the first node.
    cluster.nodes[0].stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(store.is_connected());
    let mut answered = 0;
    for i in 100..112u8 {
        let started = Instant::now();
        let result = store.check("p", &fixed(5), &[i], 1).await;
        assert!(started.elapsed() < TIMEOUT + Duration::from_millis(200));
        answered += usize::from(result.is_ok());
    }
    assert_eq!(answered, 10);
}

/// Starts a master, a replica in sync with it and a Sentinel that knows both.
async fn start_sentinel_group() -> SentinelGroup {
    // Without this the master waits 5 s for more replicas before the first sync.
    let master = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let port = master.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let conn = raw(&replica).await;
    eventually("replica in sync", || {
        let mut conn = conn.clone();
        async move {
            let info: String = ::redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .unwrap();
            info.contains("master_link_status:up")
        }
    })
    .await;
    let conf = TempFile::new("sentinel.conf");
    std::fs::write(
        &conf.0,
        format!(
            "sentinel monitor fgmaster 127.0.0.1 {port} 1\n\
             sentinel down-after-milliseconds fgmaster 200\n\
             sentinel failover-timeout fgmaster 2000\n"
        ),
    )
    .unwrap();
    let sentinel = RedisServer::start_with(&[&conf.path(), "--sentinel"]);
    let conn = raw(&sentinel).await;
    eventually("sentinel sees the replica", || {
        let mut conn = conn.clone();
        async move {
            let replicas: Vec<::redis::Value> = ::redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg("fgmaster")
                .query_async(&mut conn)
                .await
                .unwrap();
            !replicas.is_empty()
        }
    })
    .await;
    SentinelGroup {
        master,
        replica,
        sentinel,
        _conf: conf,
    }
}

async fn sentinel_store(group: &SentinelGroup) -> RedisStore {
    let mut s = settings(group.sentinel.url());
    s.mode = RedisMode::Sentinel {
        urls: vec![group.sentinel.url()],
        master: "fgmaster".to_owned(),
    };
    connected_with(s).await
}

/// `master` or `slave`, or empty while the server is unreachable.
async fn role(server: &RedisServer) -> String {
    let mut conn = raw(server).await;
    let role: Vec<::redis::Value> = ::redis::cmd("ROLE")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    match role.first() {
        Some(::redis::Value::BulkString(r)) => String::from_utf8_lossy(r).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn sentinel_mode_counts_on_the_master() {
    let group = start_sentinel_group().await;
    let store = sentinel_store(&group).await;
    let decisions = admitted(&store, &fixed(1), 2).await;
    assert!(decisions[0].allowed && !decisions[1].allowed);
    let mut conn = raw(&group.master).await;
    let key = format!("{}:f", scripts::base_key("p", b"k"));
    let count: u64 = ::redis::cmd("HGET")
        .arg(key)
        .arg("c")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn sentinel_failover_is_followed_to_the_new_master() {
    let group = start_sentinel_group().await;
    let store = sentinel_store(&group).await;
    assert!(store.check("p", &fixed(100), b"k", 1).await.is_ok());

    let conn = raw(&group.sentinel).await;
    // Refused (NOGOODSLAVE) until the Sentinel has heard from the replica itself.
    eventually("failover started", || {
        let mut conn = conn.clone();
        async move {
            ::redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg("fgmaster")
                .query_async::<()>(&mut conn)
                .await
                .is_ok()
        }
    })
    .await;
    // The Sentinel names the new master within a second or so, but the old one stays
    // writable until it is demoted, seconds later: only asking the Sentinel moves the store.
    let key = format!("{}:f", scripts::base_key("p", b"k"));
    let count = || async {
        let mut conn = raw(&group.replica).await;
        let c: Option<u64> = ::redis::cmd("HGET")
            .arg(&key)
            .arg("c")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        c.unwrap_or(0)
    };
    let promoted = || async {
        if role(&group.replica).await != "master" {
            return false;
        }
        let before = count().await;
        store.check("p", &fixed(100), b"k", 1).await.is_ok() && count().await == before + 1
    };
    eventually_within(
        "writes on the promoted server",
        Duration::from_secs(8),
        promoted,
    )
    .await;
}

//! Several engine processes on one database, coordinated through Redis.
//!
//! - **Heartbeat.** Each process writes `<prefix>:node:<id>` with a TTL of
//!   `cluster.heartbeat_ttl_secs` every third of it, and adds its id to the set
//!   `<prefix>:nodes`.
//! - **Adoption.** Every second each process looks for members whose heartbeat lapsed and
//!   claims their pending orders in the database with `UPDATE ... SET owner_node = me WHERE
//!   status = 'pending' AND owner_node = <dead>`: the condition is the fencing token, so exactly
//!   one process adopts each order, and it arms the orders' timers at once.
//! - **Stop.** A process that moves an order another process owns publishes the order number
//!   on `<prefix>:stop:<owner>`; the owner lets that order's actor and timer go.
//!
//! The database stays the arbiter of every transition: a lapsed-but-alive owner and its adopter
//! may both hold an actor for a while, and the conditional update picks one transition.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use redis::Commands;
use serde::{Deserialize, Serialize};

use super::RedisLink;
use crate::db::{orders, DbPool};
use crate::domain::time::{self, serde_ts};

/// What the cluster asks of this process's order actors (the engine's supervisor answers).
pub trait LocalOrders: Send + Sync {
    /// Pending orders this process adopted: give each its actor and timer.
    fn adopted(&self, orders: Vec<(String, NaiveDateTime)>);
    /// The order left `pending` in another process: let its actor and timer go.
    fn moved_away(&self, order_no: String);
}

/// What the cluster threads work with; they end once the engine (`life`) is gone.
struct Shared<T> {
    life: Weak<T>,
    pool: DbPool,
    orders: Arc<dyn LocalOrders>,
}

/// How often lapsed heartbeats are looked for.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Every this many watch rounds, owners are also read from the database (members the Redis set
/// lost, e.g. after a Redis restart).
const DISCOVER_EVERY_ROUNDS: u32 = 30;
/// Adoptions remembered for `GET /admin/actors`.
const ADOPTIONS_KEPT: usize = 10;

/// One adoption of a lapsed process's pending orders.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Adoption {
    pub from_node: String,
    pub orders: usize,
    #[serde(with = "serde_ts")]
    pub at: NaiveDateTime,
}

/// What a heartbeat says about its process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Beat {
    pub node_id: String,
    #[serde(with = "serde_ts")]
    pub started_at: NaiveDateTime,
    pub adopted_orders: u64,
    pub adoptions: Vec<Adoption>,
}

/// This process's membership: its heartbeat, adoptions and stop channel.
pub struct Cluster {
    link: Arc<RedisLink>,
    node_id: String,
    ttl: Duration,
    started_at: NaiveDateTime,
    adoptions: Mutex<(u64, VecDeque<Adoption>)>,
}

impl Cluster {
    pub fn new(link: Arc<RedisLink>, node_id: String, ttl_secs: u64) -> Self {
        Self {
            link,
            node_id,
            ttl: Duration::from_secs(ttl_secs),
            started_at: time::now(),
            adoptions: Mutex::new((0, VecDeque::new())),
        }
    }

    pub fn link(&self) -> &Arc<RedisLink> {
        &self.link
    }

    fn node_key(&self, node: &str) -> String {
        self.link.key(&format!("node:{node}"))
    }

    fn members_key(&self) -> String {
        self.link.key("nodes")
    }

    fn stop_channel(&self, node: &str) -> String {
        self.link.key(&format!("stop:{node}"))
    }

    /// This process's beat, as its heartbeat key holds it.
    pub fn beat(&self) -> Beat {
        let (total, recent) = &*self.adoptions.lock().unwrap_or_else(|e| e.into_inner());
        Beat {
            node_id: self.node_id.clone(),
            started_at: self.started_at,
            adopted_orders: *total,
            adoptions: recent.iter().cloned().collect(),
        }
    }

    /// Writes this process's heartbeat once.
    pub fn heartbeat(&self, conn: &mut redis::Connection) -> redis::RedisResult<()> {
        let beat = serde_json::to_string(&self.beat()).unwrap_or_default();
        redis::pipe()
            .cmd("SET")
            .arg(self.node_key(&self.node_id))
            .arg(beat)
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(self.members_key())
            .arg(&self.node_id)
            .ignore()
            .query(conn)
    }

    /// Of `nodes`, those whose heartbeat is live.
    pub fn alive(
        &self,
        conn: &mut redis::Connection,
        nodes: &[String],
    ) -> redis::RedisResult<Vec<bool>> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for node in nodes {
            pipe.exists(self.node_key(node));
        }
        pipe.query(conn)
    }

    /// Tells `owner` to let go of `order_no`'s actor (it left `pending` elsewhere).
    /// Best effort: without it the owner's timer finds the order closed and stops then.
    pub fn tell_owner_to_stop(&self, owner: &str, order_no: &str) {
        if owner == self.node_id {
            return;
        }
        let channel = self.stop_channel(owner);
        if let Err(err) = self
            .link
            .run(|conn| conn.publish::<_, _, i64>(&channel, order_no))
        {
            log::debug!("order {order_no}: could not tell node {owner} to stop its actor: {err}");
        }
    }

    fn remember(&self, adoption: Adoption) {
        let mut guard = self.adoptions.lock().unwrap_or_else(|e| e.into_inner());
        guard.0 += adoption.orders as u64;
        guard.1.push_front(adoption);
        guard.1.truncate(ADOPTIONS_KEPT);
    }

    /// The processes known to Redis (live or lapsed members, and this one) with their beats.
    pub fn nodes(&self) -> redis::RedisResult<Vec<(String, Option<Beat>)>> {
        self.link.run(|conn| {
            let mut members: Vec<String> = conn.smembers(self.members_key())?;
            if !members.contains(&self.node_id) {
                members.push(self.node_id.clone());
            }
            members.sort();
            let keys: Vec<String> = members.iter().map(|m| self.node_key(m)).collect();
            let beats: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(conn)?;
            Ok(members
                .into_iter()
                .zip(beats)
                .map(|(node, beat)| (node, beat.and_then(|b| serde_json::from_str(&b).ok())))
                .collect())
        })
    }

    /// The lapsed owners among `owners` (`None`: Redis cannot tell now).
    pub fn lapsed(&self, owners: &[String]) -> Option<Vec<String>> {
        let others: Vec<String> = owners
            .iter()
            .filter(|o| **o != self.node_id)
            .cloned()
            .collect();
        let alive = self.link.run(|conn| self.alive(conn, &others)).ok()?;
        Some(
            others
                .into_iter()
                .zip(alive)
                .filter(|(_, alive)| !alive)
                .map(|(node, _)| node)
                .collect(),
        )
    }

    /// Starts the heartbeat, watcher and stop-listener threads. They end once `life` (the
    /// engine) is gone.
    pub fn start<T: Send + Sync + 'static>(
        self: &Arc<Self>,
        life: &Arc<T>,
        pool: DbPool,
        orders: Arc<dyn LocalOrders>,
    ) -> std::io::Result<()> {
        let shared = Arc::new(Shared {
            life: Arc::downgrade(life),
            pool,
            orders,
        });
        let me = self.clone();
        let life = shared.life.clone();
        std::thread::Builder::new()
            .name("cluster-heartbeat".into())
            .spawn(move || me.heartbeat_loop(life))?;
        let me = self.clone();
        let watch = shared.clone();
        std::thread::Builder::new()
            .name("cluster-watch".into())
            .spawn(move || me.watch_loop(&watch))?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("cluster-stops".into())
            .spawn(move || me.stop_loop(&shared))?;
        Ok(())
    }

    fn heartbeat_loop<T>(&self, life: Weak<T>) {
        let every = (self.ttl / 3).max(Duration::from_millis(100));
        let mut conn: Option<redis::Connection> = None;
        let mut failing = false;
        while life.strong_count() > 0 {
            let started = Instant::now();
            let result = match conn.as_mut() {
                Some(c) => self.heartbeat(c),
                None => self.link.connect(every).and_then(|mut c| {
                    let r = self.heartbeat(&mut c);
                    conn = Some(c);
                    r
                }),
            };
            match result {
                Ok(()) if failing => {
                    failing = false;
                    log::info!("node {}: heartbeat written again", self.node_id);
                }
                Ok(()) => {}
                Err(err) => {
                    conn = None;
                    if !failing {
                        failing = true;
                        log::warn!(
                            "node {}: cannot write the heartbeat (others may adopt this node's orders): {err}",
                            self.node_id
                        );
                    }
                }
            }
            std::thread::sleep(every.saturating_sub(started.elapsed()));
        }
    }

    fn watch_loop<T>(&self, shared: &Shared<T>) {
        let mut round: u32 = 0;
        loop {
            std::thread::sleep(WATCH_EVERY);
            let Some(_alive) = shared.life.upgrade() else {
                return;
            };
            let discover = round.is_multiple_of(DISCOVER_EVERY_ROUNDS);
            round = round.wrapping_add(1);
            if let Err(err) = self.watch_once(shared, discover) {
                log::debug!("node {}: adoption round skipped: {err}", self.node_id);
            }
        }
    }

    /// Adopts the pending orders of every lapsed member (and, with `discover`, of every lapsed
    /// owner found in the database).
    fn watch_once<T>(&self, shared: &Shared<T>, discover: bool) -> Result<(), String> {
        let mut candidates: Vec<String> = self
            .link
            .run(|conn| conn.smembers(self.members_key()))
            .map_err(|e| e.to_string())?;
        if discover {
            let mut conn = shared.pool.get().map_err(|e| e.to_string())?;
            for (owner, _) in orders::pending_by_owner(&mut conn).map_err(|e| e.to_string())? {
                if let Some(owner) = owner {
                    if !candidates.contains(&owner) {
                        candidates.push(owner);
                    }
                }
            }
        }
        let Some(lapsed) = self.lapsed(&candidates) else {
            return Err("redis unreachable".into());
        };
        for dead in lapsed {
            self.adopt(shared, &dead)?;
        }
        Ok(())
    }

    fn adopt<T>(&self, shared: &Shared<T>, dead: &str) -> Result<(), String> {
        let mut conn = shared.pool.get().map_err(|e| e.to_string())?;
        let adopted = orders::adopt_from(&mut conn, &self.node_id, &[dead.to_string()])
            .map_err(|e| e.to_string())?;
        drop(conn);
        let count = adopted.len();
        shared.orders.adopted(adopted);
        // Forget the member (its orders are all claimed now); a process that comes back adds
        // itself again with its next heartbeat.
        let _ = self
            .link
            .run(|conn| conn.srem::<_, _, i64>(self.members_key(), dead));
        if count > 0 {
            log::info!(
                "node {}: adopted {count} pending orders of node {dead}, whose heartbeat lapsed",
                self.node_id
            );
            self.remember(Adoption {
                from_node: dead.to_string(),
                orders: count,
                at: time::now(),
            });
        }
        Ok(())
    }

    fn stop_loop<T>(&self, shared: &Shared<T>) {
        let channel = self.stop_channel(&self.node_id);
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        while shared.life.strong_count() > 0 {
            let result = self.listen(&channel, shared);
            if let Err(err) = result {
                if !failing {
                    failing = true;
                    log::warn!("node {}: stop channel lost: {err}", self.node_id);
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            } else {
                return;
            }
        }
    }

    /// Listens on the stop channel until `life` ends (`Ok`) or the connection fails.
    fn listen<T>(&self, channel: &str, shared: &Shared<T>) -> redis::RedisResult<()> {
        let mut conn = self.link.connect(Duration::from_secs(1))?;
        let mut pubsub = conn.as_pubsub();
        pubsub.subscribe(channel)?;
        pubsub.set_read_timeout(Some(Duration::from_secs(1)))?;
        while shared.life.strong_count() > 0 {
            match pubsub.get_message() {
                Ok(msg) => {
                    let order_no: String = msg.get_payload()?;
                    log::debug!(
                        "node {}: order {order_no} moved elsewhere; stopping its actor",
                        self.node_id
                    );
                    shared.orders.moved_away(order_no);
                }
                Err(err) if err.is_timeout() => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Nodes for `GET /admin/actors`: this process, every process Redis knows of (`known`, `None`
/// without Redis) and every owner of pending orders, each with its pending order count.
/// `alive` is null for an owner whose heartbeat cannot be read (no Redis).
pub fn describe_nodes(
    me: &Beat,
    live_actors: usize,
    pending_by_owner: Vec<(Option<String>, i64)>,
    known: Option<Vec<(String, Option<Beat>)>>,
) -> Vec<serde_json::Value> {
    let pending: BTreeMap<String, i64> = pending_by_owner
        .into_iter()
        .filter_map(|(owner, count)| owner.map(|o| (o, count)))
        .collect();
    let redis_known = known.is_some();
    let mut nodes: BTreeMap<String, Option<Beat>> = known.unwrap_or_default().into_iter().collect();
    nodes.insert(me.node_id.clone(), Some(me.clone()));
    for owner in pending.keys() {
        nodes.entry(owner.clone()).or_insert(None);
    }
    nodes
        .into_iter()
        .map(|(node, beat)| {
            let this = node == me.node_id;
            let alive = if this {
                Some(true)
            } else if redis_known {
                Some(beat.is_some())
            } else {
                None
            };
            serde_json::json!({
                "node_id": node,
                "this_node": this,
                "alive": alive,
                "pending_orders": pending.get(&node).copied().unwrap_or(0),
                "live_actors": if this { Some(live_actors) } else { None },
                "started_at": beat.as_ref().map(|b| time::format(&b.started_at)),
                "adopted_orders": beat.as_ref().map_or(0, |b| b.adopted_orders),
                "adoptions": beat.map(|b| b.adoptions).unwrap_or_default(),
            })
        })
        .collect()
}

//! The consumer's batches, with a handler of the test's own on a real queue and database:
//! many deliveries in one transaction, a refused message parked without undoing the others,
//! a failing batch retried one message at a time, duplicates applied once, and every delivery
//! acknowledged.

use lapor_shared::amqp::consume::{self, BatchHandler, HandleError, Incoming, Verdict};
use lapor_shared::db;
use lapor_shared::ops::Readiness;
use lapor_tests::{Scratch, queue_json};
use sqlx::{PgConnection, PgPool};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const QUEUE: &str = "test.batches";

/// Writes one row per message it applies, with the size of the batch it came in. Refuses
/// messages marked "refuse"; any batch holding a message marked "poison" fails as a whole,
/// though that message alone succeeds.
struct Recorder {
    sizes: Arc<Mutex<Vec<usize>>>,
}

fn mark(m: &Incoming) -> String {
    serde_json::from_slice::<serde_json::Value>(&m.body).unwrap()["mark"]
        .as_str()
        .unwrap()
        .to_owned()
}

impl BatchHandler for Recorder {
    fn name(&self) -> &'static str {
        "batch-test"
    }

    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        msgs: &[&Incoming],
    ) -> Result<Vec<Verdict>, HandleError> {
        self.sizes.lock().unwrap().push(msgs.len());
        // Writes go first, so that a failure after them shows whether they were undone.
        let ids: Vec<Uuid> = msgs
            .iter()
            .filter(|m| mark(m) != "refuse")
            .map(|m| m.message_id)
            .collect();
        sqlx::query(
            "INSERT INTO batch_test_seen (message_id, batch_size) SELECT m, $2 FROM UNNEST($1::uuid[]) AS t(m)",
        )
        .bind(&ids)
        .bind(i32::try_from(msgs.len()).unwrap())
        .execute(&mut *tx)
        .await?;
        if msgs.len() > 1 && msgs.iter().any(|m| mark(m) == "poison") {
            return Err(HandleError::Retry(anyhow::anyhow!(
                "a poison message fails its batch"
            )));
        }
        Ok(msgs
            .iter()
            .map(|m| match mark(m).as_str() {
                "refuse" => Err("refused by the test handler".to_owned()),
                _ => Ok(()),
            })
            .collect())
    }
}

fn declare() -> consume::Declare {
    Arc::new(|ch: lapin::Channel| {
        Box::pin(async move {
            lapor_tests::declare_quorum(&ch, QUEUE).await?;
            Ok(())
        })
    })
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_together_parks_what_it_refuses_and_falls_back_to_single_messages() {
    let scratch = Scratch::create().await;
    let settings = scratch.settings.clone();
    assert!(
        settings.amqp.batch_max > 1,
        "the default configuration batches"
    );
    let pool = db::connect(&settings.database, "batch-test").await.unwrap();
    sqlx::query("CREATE TABLE batch_test_seen (message_id uuid NOT NULL, batch_size int NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();

    // Everything is queued before the consumer starts, so deliveries arrive faster than they
    // are handled and batches form.
    let amqp = lapin::Connection::connect(&settings.amqp.url, Default::default())
        .await
        .unwrap();
    let ch = amqp.create_channel().await.unwrap();
    declare()(ch.clone()).await.unwrap();
    let mut plan: Vec<(Uuid, &str)> = Vec::new();
    for i in 0..300 {
        let mark = match i {
            40 | 41 | 150 => "refuse",
            100 => "poison",
            _ => "ok",
        };
        plan.push((Uuid::new_v4(), mark));
    }
    // Five messages delivered twice: once near each other, once far apart.
    let twice: Vec<(Uuid, &str)> = vec![plan[10], plan[60], plan[61], plan[200], plan[299]];
    let mut sends = plan.clone();
    sends.insert(12, plan[10]);
    sends.extend_from_slice(&twice[1..]);
    let bodies: Vec<serde_json::Value> = sends
        .iter()
        .map(|(id, mark)| serde_json::json!({"message_id": id, "mark": mark}))
        .collect();
    queue_json(&ch, QUEUE, &bodies).await;

    let sizes = Arc::new(Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(consume::run(
        settings.clone(),
        pool.clone(),
        QUEUE.to_owned(),
        declare(),
        Arc::new(Recorder {
            sizes: sizes.clone(),
        }),
        None,
        Readiness::default(),
        shutdown.clone(),
    ));

    let applied = plan.iter().filter(|(_, m)| *m != "refuse").count() as i64;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = count(
            &pool,
            "SELECT count(*) FROM batch_test_seen s JOIN inbox i USING (message_id)",
        )
        .await;
        let parked = count(&pool, "SELECT count(*) FROM parked_messages").await;
        if seen >= applied && parked >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "applied {seen} of {applied}, parked {parked} of 3"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    consumer.await.unwrap().unwrap();

    // Only committed writes are left: the failed batch's rows were rolled back, and each
    // message that was applied was applied once, duplicates included.
    let rows: Vec<(Uuid, i32)> =
        sqlx::query_as("SELECT message_id, batch_size FROM batch_test_seen")
            .fetch_all(&pool)
            .await
            .unwrap();
    let ids: Vec<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    let distinct: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(ids.len(), distinct.len(), "a message was applied twice");
    let expected: HashSet<Uuid> = plan
        .iter()
        .filter(|(_, m)| *m != "refuse")
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(distinct, expected);

    // The batches were real, and the poison message got through alone.
    let observed = sizes.lock().unwrap().clone();
    let largest = observed.iter().copied().max().unwrap_or(0);
    assert!(
        largest > 1 && largest <= usize::from(settings.amqp.batch_max),
        "batch sizes {observed:?}"
    );
    let poison = plan.iter().find(|(_, m)| *m == "poison").unwrap().0;
    assert!(
        rows.contains(&(poison, 1)),
        "the poison message was not retried alone"
    );
    assert!(
        rows.iter().any(|(_, size)| *size > 1),
        "no batch of several messages committed"
    );

    // The refused messages are parked with the reason and are not in the inbox, so a redrive
    // after a fix would apply them.
    let parked: Vec<(String, String, String)> =
        sqlx::query_as("SELECT queue, message_id, reason FROM parked_messages ORDER BY message_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut refused: Vec<String> = plan
        .iter()
        .filter(|(_, m)| *m == "refuse")
        .map(|(id, _)| id.to_string())
        .collect();
    refused.sort();
    assert_eq!(
        parked.iter().map(|p| p.1.clone()).collect::<Vec<_>>(),
        refused
    );
    assert!(
        parked
            .iter()
            .all(|(q, _, r)| q == QUEUE && r == "refused by the test handler"),
        "{parked:?}"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inbox WHERE message_id IN (SELECT message_id::uuid FROM parked_messages)"
        )
        .await,
        0
    );

    // Every delivery was acknowledged: with the consumer gone, nothing came back.
    assert_eq!(lapor_tests::queue_len(&ch, QUEUE).await, 0);

    amqp.close(200, "done".into()).await.ok();
    pool.close().await;
    scratch.remove().await;
}

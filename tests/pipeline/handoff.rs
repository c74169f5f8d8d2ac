//! The hand-off from a producer to its relay: committed rows are published at once, without a
//! notification or a claim; rows of a rolled-back savepoint are never handed over; rows that
//! were never handed over (a crash after the commit) are published by a claim once their
//! grace has passed, or by the relay's flush at shutdown. A message parked in a savepoint of
//! its batch hands nothing over.

use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapor_shared::amqp::{consume, relay};
use lapor_shared::clock;
use lapor_shared::config::Settings;
use lapor_shared::db::outbox::{self, Outgoing};
use lapor_shared::messages::exchange;
use lapor_shared::service::Context;
use lapor_tests::{Scratch, queue_json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// An exclusive queue that sees every `test.*` message on `lapor.events`.
async fn tap(ctx: &Context) -> (lapin::Connection, lapin::Consumer) {
    let conn = lapin::Connection::connect(&ctx.settings.amqp.url, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ctx.topology.declare(&ch).await.unwrap();
    ch.queue_bind(
        q.name().clone(),
        exchange::EVENTS.into(),
        "test.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let consumer = ch
        .basic_consume(
            q.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (conn, consumer)
}

async fn next_id(consumer: &mut lapin::Consumer, within: Duration) -> Uuid {
    use futures::StreamExt;
    let d = tokio::time::timeout(within, consumer.next())
        .await
        .expect("nothing published in time")
        .unwrap()
        .unwrap();
    Uuid::parse_str(d.properties.message_id().as_ref().unwrap().as_str()).unwrap()
}

fn message(key: &str) -> Outgoing {
    Outgoing::json(
        exchange::EVENTS,
        key.to_owned(),
        Uuid::new_v4(),
        &serde_json::json!({"test": key}),
    )
}

/// Commits `kept`, and `undone` in a savepoint that is rolled back, inside the hand-off's
/// collection; returns what it collected.
async fn commit(ctx: &Context, kept: &[Outgoing], undone: &[Outgoing]) -> Vec<outbox::OutboxRow> {
    let handoff = ctx.handoff.clone().unwrap();
    let (result, rows) = handoff
        .collecting(async {
            let mut tx = ctx.pool.begin().await?;
            outbox::enqueue(&mut tx, kept).await?;
            if !undone.is_empty() {
                let mark = outbox::collected();
                let mut sp = sqlx::Connection::begin(&mut *tx).await?;
                outbox::enqueue(&mut sp, undone).await?;
                sp.rollback().await?;
                outbox::forget_collected_after(mark);
            }
            tx.commit().await
        })
        .await;
    result.unwrap();
    rows
}

async fn start(settings: Settings) -> (Context, CancellationToken, tokio::task::JoinHandle<()>) {
    let ctx = Context::start("intake", settings, clock::system())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let relay = tokio::spawn({
        let (ctx, stop) = (ctx.clone(), stop.clone());
        async move {
            relay::run(
                ctx.settings.clone(),
                ctx.pool.clone(),
                ctx.topology.clone(),
                ctx.app_id,
                ctx.handoff.clone(),
                ctx.readiness.clone(),
                stop,
            )
            .await
            .unwrap();
        }
    });
    (ctx, stop, relay)
}

/// A relay that only the hand-off can make publish within a test's patience: a grace of
/// 61 s and a poll once a minute.
async fn start_handoff_only(
    scratch: &Scratch,
) -> (Context, CancellationToken, tokio::task::JoinHandle<()>) {
    start(handoff_only(scratch)).await
}

fn handoff_only(scratch: &Scratch) -> Settings {
    let mut settings = scratch.settings.clone();
    settings.amqp.publish_timeout_ms = 60_000;
    settings.outbox.poll_interval_ms = 60_000;
    settings
}

async fn outbox_rows(ctx: &Context) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&ctx.pool)
        .await
        .unwrap()
}

/// Waits up to 5 s for the relay to delete every outbox row it published.
async fn outbox_empties(ctx: &Context) {
    for _ in 0..100 {
        if outbox_rows(ctx).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(outbox_rows(ctx).await, 0, "published rows were not deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_off_rows_go_out_at_once_and_the_rest_at_the_flush() {
    let scratch = Scratch::create().await;
    let (ctx, stop, relay) = start_handoff_only(&scratch).await;
    let (_conn, mut seen) = tap(&ctx).await;

    let kept = [message("test.kept")];
    let undone = [message("test.undone")];
    let rows = commit(&ctx, &kept, &undone).await;
    assert_eq!(
        rows.iter().map(|r| r.message_id).collect::<Vec<_>>(),
        vec![kept[0].message_id],
        "the rolled-back savepoint's row must not be handed over"
    );
    let waiting: bool = sqlx::query_scalar(
        "SELECT bool_and(publish_after > now() + interval '30 seconds') FROM outbox",
    )
    .fetch_one(&ctx.pool)
    .await
    .unwrap();
    assert!(
        waiting,
        "handed-off rows are left alone by claims for the grace"
    );
    ctx.handoff.as_ref().unwrap().send(rows);
    assert_eq!(
        next_id(&mut seen, Duration::from_secs(10)).await,
        kept[0].message_id
    );
    // Deleted once confirmed.
    outbox_empties(&ctx).await;

    // A producer that committed and died before handing over: the flush at shutdown takes
    // its rows although their grace has not passed.
    let orphan = [message("test.orphan")];
    let rows = commit(&ctx, &orphan, &[]).await;
    assert_eq!(rows.len(), 1);
    drop(rows);
    stop.cancel();
    relay.await.unwrap();
    assert_eq!(
        next_id(&mut seen, Duration::from_secs(10)).await,
        orphan[0].message_id
    );
    assert_eq!(outbox_rows(&ctx).await, 0);
    ctx.pool.close().await;
    scratch.remove().await;
}

/// Published hand-offs are deleted together, a little later; a relay stopped before that
/// deletes them before its flush, so the flush does not publish them a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopping_right_after_a_hand_off_publishes_it_once() {
    let scratch = Scratch::create().await;
    let (ctx, stop, relay) = start_handoff_only(&scratch).await;
    let (_conn, mut seen) = tap(&ctx).await;

    let sent: Vec<Outgoing> = (0..20).map(|_| message("test.once")).collect();
    let rows = commit(&ctx, &sent, &[]).await;
    ctx.handoff.as_ref().unwrap().send(rows);
    // Stopped as soon as the first is out: well before the published rows are deleted.
    let mut got = vec![next_id(&mut seen, Duration::from_secs(10)).await];
    stop.cancel();
    relay.await.unwrap();
    while let Ok(id) = tokio::time::timeout(Duration::from_millis(500), async {
        next_id(&mut seen, Duration::from_secs(10)).await
    })
    .await
    {
        got.push(id);
    }
    got.sort();
    let mut want: Vec<Uuid> = sent.iter().map(|m| m.message_id).collect();
    want.sort();
    assert_eq!(got, want, "each message once, none again from the flush");
    assert_eq!(outbox_rows(&ctx).await, 0);
    ctx.pool.close().await;
    scratch.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_never_handed_over_are_claimed_after_their_grace() {
    let scratch = Scratch::create().await;
    let mut settings = scratch.settings.clone();
    settings.amqp.publish_timeout_ms = 200;
    settings.outbox.poll_interval_ms = 200;
    let (ctx, stop, relay) = start(settings.clone()).await;
    let (_conn, mut seen) = tap(&ctx).await;

    // Committed, never handed over (the producer crashed after its commit).
    let orphan = [message("test.orphan")];
    let rows = commit(&ctx, &orphan, &[]).await;
    drop(rows);
    assert_eq!(
        next_id(&mut seen, Duration::from_secs(15)).await,
        orphan[0].message_id
    );
    stop.cancel();
    relay.await.unwrap();
    ctx.pool.close().await;
    scratch.remove().await;
}

/// A per-message handler that publishes one `test.*` message per delivery (its id derived
/// from the delivery's), and refuses deliveries marked "refuse" after writing it.
struct Echo;

fn echo_id(delivery: Uuid) -> Uuid {
    Uuid::new_v5(&delivery, b"echo")
}

impl consume::Handler for Echo {
    fn name(&self) -> &'static str {
        "echo-test"
    }

    async fn handle(
        &self,
        tx: &mut sqlx::PgConnection,
        msg: &consume::Incoming,
    ) -> Result<(), consume::HandleError> {
        let body: serde_json::Value = serde_json::from_slice(&msg.body).unwrap();
        let out = Outgoing::json(
            exchange::EVENTS,
            "test.echo".to_owned(),
            echo_id(msg.message_id),
            &body,
        );
        outbox::enqueue(tx, &[out]).await?;
        if body["mark"] == "refuse" {
            return Err(consume::HandleError::Park("refused after writing".into()));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_parked_inside_a_batch_hands_nothing_over() {
    let scratch = Scratch::create().await;
    let mut settings = scratch.settings.clone();
    // Only the hand-off can publish within the test (grace 61 s, poll once a minute).
    settings.amqp.publish_timeout_ms = 60_000;
    settings.outbox.poll_interval_ms = 60_000;
    let (ctx, relay_stop, relay) = start(settings.clone()).await;
    let (_conn, mut seen) = tap(&ctx).await;

    // Queued before the consumer starts, so that they arrive in batches and each is handled
    // in a savepoint of its batch's transaction.
    let queue = "test.echo";
    let amqp = lapin::Connection::connect(&settings.amqp.url, Default::default())
        .await
        .unwrap();
    let ch = amqp.create_channel().await.unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let plan: Vec<(Uuid, &str)> = (0..60)
        .map(|i| (Uuid::new_v4(), if i % 7 == 3 { "refuse" } else { "ok" }))
        .collect();
    let bodies: Vec<serde_json::Value> = plan
        .iter()
        .map(|(id, mark)| serde_json::json!({"message_id": id, "mark": mark}))
        .collect();
    queue_json(&ch, queue, &bodies).await;
    let declare: consume::Declare = std::sync::Arc::new(|_| Box::pin(async { Ok(()) }));
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(consume::run(
        settings.clone(),
        ctx.pool.clone(),
        queue.to_owned(),
        declare,
        std::sync::Arc::new(consume::PerMessage(Echo)),
        ctx.handoff.clone(),
        ctx.readiness.clone(),
        stop.clone(),
    ));

    let expected: std::collections::HashSet<Uuid> = plan
        .iter()
        .filter(|(_, m)| *m == "ok")
        .map(|(id, _)| echo_id(*id))
        .collect();
    let refused: std::collections::HashSet<Uuid> = plan
        .iter()
        .filter(|(_, m)| *m == "refuse")
        .map(|(id, _)| echo_id(*id))
        .collect();
    let mut got = std::collections::HashSet::new();
    while got.len() < expected.len() {
        let id = next_id(&mut seen, Duration::from_secs(15)).await;
        assert!(
            !refused.contains(&id),
            "a rolled-back message was published"
        );
        got.insert(id);
    }
    assert_eq!(got, expected);
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_messages")
        .fetch_one(&ctx.pool)
        .await
        .unwrap();
    assert_eq!(parked as usize, refused.len());
    stop.cancel();
    consumer.await.unwrap().unwrap();
    relay_stop.cancel();
    relay.await.unwrap();
    // The flush found nothing of the refused ones either: nothing more arrives.
    use futures::StreamExt;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), seen.next())
            .await
            .is_err(),
        "something more was published"
    );
    amqp.close(200, "done".into()).await.ok();
    ctx.pool.close().await;
    scratch.remove().await;
}

/// A case event's shape as far as batching cares: a JSON object with its `message_id`.
fn event(key: &str) -> Outgoing {
    let id = Uuid::new_v4();
    Outgoing::json(
        exchange::EVENTS,
        key.to_owned(),
        id,
        &serde_json::json!({"message_id": id, "test": key}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_together_cross_the_broker_in_batches_of_one_routing_key() {
    use futures::StreamExt;
    let scratch = Scratch::create().await;
    let mut settings = handoff_only(&scratch);
    settings.outbox.events_per_message = 3;
    let (ctx, stop, relay) = start(settings).await;
    let (_conn, mut seen) = tap(&ctx).await;

    // Seven events of one key, one of another, and one that cannot travel in a batch (no
    // message id in its body), committed together and handed over in one piece.
    let batched: Vec<Outgoing> = (0..7).map(|_| event("test.batched")).collect();
    let other = [event("test.other")];
    let loner = [message("test.batched")];
    let all: Vec<Outgoing> = batched
        .iter()
        .chain(&other)
        .chain(&loner)
        .cloned()
        .collect();
    let rows = commit(&ctx, &all, &[]).await;
    assert_eq!(rows.len(), 9);
    ctx.handoff.as_ref().unwrap().send(rows);

    // 3 + 3 in two batches; the seventh, the other key's and the loner alone.
    let mut batches = Vec::new();
    let mut alone = Vec::new();
    for _ in 0..5 {
        let d = tokio::time::timeout(Duration::from_secs(10), seen.next())
            .await
            .expect("published in time")
            .unwrap()
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        if body["schema"] == "lapor.batch.v1" {
            assert_eq!(d.routing_key.as_str(), "test.batched");
            let members = lapor_shared::messages::batch::decode(&d.data).unwrap();
            let ids: Vec<Uuid> = members
                .iter()
                .map(|m| {
                    assert!(
                        m.headers.contains_key("traceparent"),
                        "each member keeps its own trace context"
                    );
                    let v: serde_json::Value = serde_json::from_str(m.message.get()).unwrap();
                    Uuid::parse_str(v["message_id"].as_str().unwrap()).unwrap()
                })
                .collect();
            batches.push(ids);
        } else {
            let id = Uuid::parse_str(d.properties.message_id().as_ref().unwrap().as_str()).unwrap();
            alone.push((d.routing_key.to_string(), id));
        }
    }
    let ids = |o: &[Outgoing]| o.iter().map(|m| m.message_id).collect::<Vec<_>>();
    assert_eq!(
        batches,
        vec![ids(&batched[..3]), ids(&batched[3..6])],
        "members in the order written, at most events_per_message in one"
    );
    alone.sort();
    let mut expected = vec![
        ("test.batched".to_owned(), batched[6].message_id),
        ("test.batched".to_owned(), loner[0].message_id),
        ("test.other".to_owned(), other[0].message_id),
    ];
    expected.sort();
    assert_eq!(alone, expected);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), seen.next())
            .await
            .is_err(),
        "nothing is published twice"
    );
    // The batches' rows are deleted like any other once confirmed.
    outbox_empties(&ctx).await;
    stop.cancel();
    relay.await.unwrap();
    ctx.pool.close().await;
    scratch.remove().await;
}

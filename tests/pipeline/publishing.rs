//! The publisher on a real broker: a relay round hands all its messages to lapin at once, and
//! they must still arrive complete and in the order of their rows.

use lapin::options::BasicGetOptions;
use lapor_shared::amqp::publish::Publisher;
use lapor_shared::db::outbox::OutboxRow;
use lapor_tests::{Scratch, queue_len};
use std::time::Duration;
use uuid::Uuid;

const QUEUES: [&str; 2] = ["test.publish.a", "test.publish.b"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_of_rows_is_confirmed_complete_and_in_row_order_on_every_queue() {
    let scratch = Scratch::create().await;
    let amqp = lapin::Connection::connect(&scratch.settings.amqp.url, Default::default())
        .await
        .unwrap();
    let ch = amqp.create_channel().await.unwrap();
    for q in QUEUES {
        lapor_tests::declare_quorum(&ch, q).await.unwrap();
    }
    // More rows than a relay round's default batch, alternating between the two queues
    // through the default exchange, as unit messages go one per message.
    let rows: Vec<OutboxRow> = (0..300)
        .map(|i| OutboxRow {
            id: i,
            message_id: Uuid::now_v7(),
            exchange: String::new(),
            routing_key: QUEUES[i as usize % 2].to_owned(),
            headers: Default::default(),
            payload: format!(r#"{{"n":{i}}}"#).into_bytes(),
        })
        .collect();
    let publisher = Publisher::open(&amqp, Duration::from_secs(10), "publish-test")
        .await
        .unwrap();
    publisher.publish_rows(&rows).await.unwrap();

    // Confirmed means queued: every row is there once the call returns.
    for q in QUEUES {
        assert_eq!(queue_len(&ch, q).await, 150, "messages on {q}");
    }
    for (k, q) in QUEUES.iter().enumerate() {
        let expected: Vec<String> = rows
            .iter()
            .skip(k)
            .step_by(2)
            .map(|r| r.message_id.to_string())
            .collect();
        let mut got = Vec::new();
        while let Some(m) = ch
            .basic_get((*q).into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let id = m.properties.message_id().as_ref().unwrap().to_string();
            let body = String::from_utf8(m.delivery.data.clone()).unwrap();
            let row = rows
                .iter()
                .find(|r| r.message_id.to_string() == id)
                .unwrap();
            assert_eq!(body.as_bytes(), row.payload.as_slice(), "body of {id}");
            assert_eq!(m.properties.delivery_mode(), &Some(2), "persistent");
            got.push(id);
        }
        assert_eq!(got, expected, "order on {q}");
    }
    amqp.close(200, "done".into()).await.ok();
    scratch.remove().await;
}

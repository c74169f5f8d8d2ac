//! Removes what earlier test runs left behind: `lapor-test-*` vhosts and `lapor_test_*`
//! databases. `make test` runs it first, so a crashed run cannot slow the next one down.

use lapor_shared::broker_admin::BrokerAdmin;
use lapor_shared::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::defaults();
    let admin = BrokerAdmin::detect(&settings.amqp).await?;
    let mut vhosts = 0;
    for v in admin
        .list_vhosts()
        .await?
        .into_iter()
        .filter(|v| v.starts_with("lapor-test-"))
    {
        admin.delete_vhost(&v).await?;
        vhosts += 1;
    }
    let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
    let dbs: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'lapor\\_test\\_%'")
            .fetch_all(&pool)
            .await?;
    for d in &dbs {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{d}\" WITH (FORCE)"
        )))
        .execute(&pool)
        .await?;
    }
    println!(
        "removed {vhosts} test vhost(s) and {} test database(s)",
        dbs.len()
    );
    Ok(())
}

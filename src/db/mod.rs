//! Postgres: connecting with a clear error, creating the database, running migrations, and
//! telling an error worth retrying from one that will never succeed.

pub mod attempts;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::config::mask_password;

fn not_reachable(url: &str, err: &sqlx::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "Postgres not reachable at {} ({err}): start it with \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
         (Debian: `apt-get install -y postgresql`), or set DATABASE_URL",
        mask_password(url)
    )
}

fn database_name(url: &str) -> anyhow::Result<(PgConnectOptions, String)> {
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("DATABASE_URL={} is not a Postgres URL", mask_password(url)))?;
    let name = options
        .get_database()
        .map(str::to_string)
        .with_context(|| format!("DATABASE_URL={} names no database", mask_password(url)))?;
    Ok((options, name))
}

/// A pool on an existing, migrated database.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let (options, name) = database_name(url)?;
    // One direct connection first: a pool would retry until its timeout and then report only
    // that it timed out, not why.
    let probe = PgConnection::connect_with(&options)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000") => anyhow::anyhow!(
                "database {name} does not exist at {}: run `ihub setup` first",
                mask_password(url)
            ),
            _ => not_reachable(url, &err),
        })?;
    let _ = probe.close().await;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|err| not_reachable(url, &err))
}

/// Creates the database `url` names unless it exists. Returns whether it created it.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<bool> {
    let (options, name) = database_name(url)?;
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .map_err(|err| not_reachable(url, &err))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if exists {
        return Ok(false);
    }
    let statement = format!("CREATE DATABASE {}", quote_identifier(&name));
    match sqlx::query(AssertSqlSafe(statement))
        .execute(&mut admin)
        .await
    {
        Ok(_) => Ok(true),
        // Another `setup` created it in the meantime.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => Ok(false),
        Err(err) => Err(err).with_context(|| format!("could not create database {name}")),
    }
}

/// Drops the database `url` names, closing its connections (tests clean up with this).
pub async fn drop_database(url: &str) -> anyhow::Result<()> {
    let (options, name) = database_name(url)?;
    let mut admin = PgConnection::connect_with(&options.database("postgres")).await?;
    let statement = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_identifier(&name)
    );
    sqlx::query(AssertSqlSafe(statement))
        .execute(&mut admin)
        .await?;
    Ok(())
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations")
        .run(pool)
        .await
        .context("migrations failed")
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether the database answers (for `/ready`).
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// Whether `err` may go away by itself (the connection, the server, a timeout, a lost
/// serialization race), so the work is worth retrying; anything else (a constraint, bad data,
/// a statement that cannot work) fails the same way every time.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| transient_sqlstate(&code)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// SQLSTATE classes that describe the moment, not the statement: connection exceptions (08),
/// transaction rollbacks such as serialization failures and deadlocks (40), insufficient
/// resources (53), operator intervention such as a shutdown or a statement timeout (57),
/// system errors (58), a lock not available now (55P03), internal errors (XX).
pub fn transient_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58" | "XX")) || code == "55P03"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_moment_is_retried_the_statement_is_not() {
        for code in [
            "08006", "08001", "40001", "40P01", "53300", "57P01", "57014", "55P03",
        ] {
            assert!(transient_sqlstate(code), "{code}");
        }
        // Unique, check, not-null and foreign-key violations; NUL and bad UTF-8 in text;
        // timestamps and numbers out of range; a missing table or column.
        for code in [
            "23505", "23514", "23502", "23503", "22P05", "22021", "22008", "22003", "42P01",
            "42703",
        ] {
            assert!(!transient_sqlstate(code), "{code}");
        }
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
    }
}

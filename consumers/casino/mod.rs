//! The casino's consumer-process side: no durable consumers, one request/reply service.
//!
//! | service | subjects | does |
//! | --- | --- | --- |
//! | `ihub-casino-wallet` | `svc.casino.{balance,debit,credit,rollback,launch,simulate}` (queue group `q`) | answers the wallet's calls from Postgres ([`wallet`]); launches games and plays the scripted round with the provider ([`front`]); relays the ledger's outbox to `ledger.casino.<kind>` |

mod front;
pub mod service;
pub mod wallet;

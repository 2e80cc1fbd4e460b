//! The `ihub` command line.

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Env, Secret};
use crate::integration::Integration;
use crate::integrations;
use crate::integrations::wallet::bench;
use crate::integrations::wallet::config::{WALLET_HMAC, WalletConfig};
use crate::nats::Bus;
use crate::runtime::{dlq, park};
use crate::signatures::{TimestampedHmac, canonical_json, unix_now};
use crate::startup::{self, Tasks};
use crate::{chaos, server, shutdown, telemetry};

#[derive(Parser)]
#[command(
    name = "ihub",
    version,
    about = "Integration hub: HTTP ingress → NATS JetStream → durable consumers → partner APIs",
    after_help = "Configuration comes from environment variables (NATS_URL, DATABASE_URL, \
                  HTTP_ADDR, WALLET_HMAC_SECRET, …); the README has the full table."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database if missing, run migrations, create or update the streams,
    /// consumers and KV buckets defined in nats/. Idempotent.
    Setup,
    /// Run the HTTP ingress only (HTTP_ADDR).
    Ingress {
        #[command(flatten)]
        select: Select,
    },
    /// Run the durable consumers only. Any number of `consume` processes may run at once;
    /// they share the work of each durable.
    Consume {
        #[command(flatten)]
        select: Select,
        /// Run only these consumers (comma-separated), e.g. deliver-rgs,deliver-operator.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Setup, ingress, all consumers and all partner mocks in one process, with demo secrets
    /// where the environment sets none: the whole hub on one machine.
    Dev {
        #[command(flatten)]
        select: Select,
    },
    /// Run the partner mocks alone, each on its <NAME>_MOCK_ADDR.
    Mocks {
        #[command(flatten)]
        select: Select,
    },
    /// The hub at a glance: NATS and Postgres readiness, streams, durables (pending, ack
    /// pending, redelivered, last active), dead letters per consumer, shared breakers.
    Status {
        /// One JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and replay dead letters (the DLQ stream).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Inspect and release parked messages (the PARKED stream): messages waiting for their key.
    Parked {
        #[command(subcommand)]
        command: ParkedCommand,
    },
    /// Print the signature headers for a JSON body, ready for `curl -H @-`: the wallet's
    /// X-Timestamp and X-Signature, NewStore's X-NewStore-Signature (`--scheme newstore`) or
    /// the game provider's x-casino-signature (`--scheme casino`); the last two are over the
    /// body exactly as given: send it byte for byte.
    Sign {
        /// The JSON body to sign; `-` reads it from standard input.
        #[arg(long)]
        body: String,
        #[arg(long, value_enum, default_value = "wallet")]
        scheme: SignScheme,
        /// Signing secret; defaults to WALLET_HMAC_SECRET (NEWSTORE_WEBHOOK_SECRET with
        /// `--scheme newstore`, CASINO_SECRET with `--scheme casino`), else the demo secret of
        /// `ihub dev`.
        #[arg(long)]
        secret: Option<String>,
        /// Unix seconds to sign with (default: now).
        #[arg(long)]
        timestamp: Option<i64>,
    },
    /// Send realistic signed partner events to a running hub.
    Simulate {
        #[command(subcommand)]
        command: SimulateCommand,
    },
    /// Drive signed debits against a running hub; compare with raw JetStream publishes.
    Bench(bench::Args),
    /// Rerun the resilience scenarios (a consumer killed, NATS, Postgres or the operator down)
    /// against a hub of their own on loopback; count accepted, lost and duplicated requests.
    Chaos(chaos::Args),
}

#[derive(Subcommand)]
enum ParkedCommand {
    /// List parked messages: sequence, consumer, key, original subject, parked at, reason.
    List {
        /// Only this consumer's parked messages.
        #[arg(long)]
        consumer: Option<String>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a key's parked messages again, in the order they were parked (what the consumer
    /// does itself once the key is ready).
    Release {
        #[arg(long)]
        consumer: String,
        #[arg(long)]
        key: String,
    },
}

#[derive(Subcommand)]
enum SimulateCommand {
    /// NewStore webhook events, signed with NEWSTORE_WEBHOOK_SECRET (else the demo secret),
    /// to `--url` (default: the ingress at HTTP_ADDR).
    Newstore {
        /// order.opened, order.completed, order.cancelled or return.processed.
        #[arg(long, default_value = "order.completed")]
        event: String,
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// One order for every event (default: a new order each).
        #[arg(long)]
        order_id: Option<String>,
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SignScheme {
    Wallet,
    Newstore,
    Casino,
}

/// Which integrations a command runs.
#[derive(clap::Args)]
struct Select {
    /// Only these integrations (comma-separated, e.g. wallet,wavegate); default: all. A
    /// process asks only for the secrets of what it runs.
    #[arg(long, value_delimiter = ',')]
    integrations: Vec<String>,
}

impl Select {
    fn integrations(&self) -> anyhow::Result<Vec<&'static Integration>> {
        integrations::select(&self.integrations)
    }
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters: sequence, consumer, original subject, deliveries, error.
    List {
        #[command(flatten)]
        filter: DlqFilter,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with all its headers and its payload.
    Show { seq: u64 },
    /// Republish dead letters to their original subject with their original headers (the
    /// trace continues), then remove them from the DLQ: one by its sequence, or every one the
    /// filters take (`--all` for all of them).
    Replay {
        /// The DLQ sequence to replay.
        #[arg(conflicts_with_all = ["all", "from", "to", "consumer", "since", "subject"])]
        seq: Option<u64>,
        /// Every dead letter (the filters narrow it).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: DlqFilter,
        /// At most this many per second (`50` or `50/s`).
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
        /// Show what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which dead letters a `dlq` command takes.
#[derive(clap::Args)]
struct DlqFilter {
    /// From this DLQ sequence on (included).
    #[arg(long)]
    from: Option<u64>,
    /// Up to this DLQ sequence (included).
    #[arg(long)]
    to: Option<u64>,
    /// Only this consumer's dead letters.
    #[arg(long)]
    consumer: Option<String>,
    /// Only those that failed since: an RFC 3339 time or how long ago (15m, 2h, 1d).
    #[arg(long)]
    since: Option<String>,
    /// Only those whose original subject matches this NATS pattern (in.wallet.*, out.>).
    #[arg(long)]
    subject: Option<String>,
}

impl DlqFilter {
    fn given(&self) -> bool {
        self.from.is_some()
            || self.to.is_some()
            || self.consumer.is_some()
            || self.since.is_some()
            || self.subject.is_some()
    }

    fn filter(self) -> anyhow::Result<dlq::Filter> {
        Ok(dlq::Filter {
            from: self.from,
            to: self.to,
            consumer: self.consumer,
            since: self
                .since
                .map(|since| dlq::parse_since(&since, chrono::Utc::now()))
                .transpose()?,
            subject: self.subject,
        })
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches("/s");
    match number.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("{text:?}: a rate per second, like 50 or 50/s")),
    }
}

/// The command line, with `ihub mocks --help` listing every registered mock.
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut listed =
        String::from("Mocks (name, where it listens, the setting that points the hub at it):\n");
    for integration in integrations::ALL {
        for mock in integration.mocks {
            let wires: Vec<&str> = mock.wires.iter().map(|w| w.var).collect();
            listed.push_str(&format!(
                "  {:<16} {} ({})  {}  [{}]\n",
                mock.name,
                mock.addr_var,
                mock.default_addr,
                wires.join(", "),
                integration.name
            ));
        }
    }
    let matches = Cli::command()
        .mut_subcommand("mocks", |mocks| mocks.after_help(listed))
        .get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
}

pub fn main() -> ExitCode {
    let cli = parse();
    crate::tls::install_crypto();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Setup => {
            let cfg = Config::from_env()?;
            startup::setup(&cfg, |line| println!("  {line}")).await?;
            println!("setup done");
            Ok(())
        }
        Command::Ingress { select } => {
            let integrations = select.integrations()?;
            let cfg = Config::from_env()?;
            cfg.env.require(&startup::ingress_secrets(&integrations))?;
            let mut running = Running::start(cfg, "ingress")?;
            let started = async {
                let cfg = &running.cfg;
                let (bus, db) = startup::connect(cfg, "ingress", 8).await?;
                let listener = server::bind(cfg.http_addr, "the ingress", "HTTP_ADDR").await?;
                let url = startup::ingress(
                    cfg,
                    &integrations,
                    bus,
                    db,
                    listener,
                    running.shutdown.clone(),
                    &mut running.tasks,
                )
                .await?;
                println!("ihub ingress listening on {url}");
                anyhow::Ok(())
            }
            .await;
            running.finish(started).await
        }
        Command::Consume { select, only } => {
            // A typo in --only is reported before anything is connected.
            let selected = select.integrations()?;
            let consumers = integrations::consumers(&selected, &only)?;
            let services = integrations::services(&selected, &only);
            let cfg = Config::from_env()?;
            cfg.env.require(&startup::consumer_secrets(&consumers))?;
            cfg.env.require(&startup::service_secrets(&services))?;
            let mut running = Running::start(cfg, "consume")?;
            let started = async {
                let cfg = &running.cfg;
                let pool = (cfg.consumer_concurrency as u32).clamp(4, 32);
                let (bus, db) = startup::connect(cfg, "consume", pool).await?;
                startup::consumers(
                    cfg,
                    &consumers,
                    bus.clone(),
                    db.clone(),
                    &running.shutdown,
                    &mut running.tasks,
                )
                .await?;
                startup::services(
                    cfg,
                    &services,
                    bus,
                    db,
                    &running.shutdown,
                    &mut running.tasks,
                )
                .await?;
                crate::metrics::install();
                if cfg.env.non_empty("METRICS_ADDR").is_some() {
                    let addr = cfg.env.addr("METRICS_ADDR", "127.0.0.1:9100")?;
                    let listener =
                        server::bind(addr, "the metrics endpoint", "METRICS_ADDR").await?;
                    println!("metrics on {}/metrics", server::url_of(&listener));
                    running.tasks.spawn(server::serve(
                        listener,
                        crate::metrics::router(),
                        running.shutdown.clone(),
                    ));
                }
                println!("ihub consumers running");
                anyhow::Ok(())
            }
            .await;
            running.finish(started).await
        }
        Command::Mocks { select } => {
            let (mocks, secrets) = startup::mocks_of(&select.integrations()?);
            let cfg = Config::from_env()?;
            cfg.env.require(&secrets)?;
            let mut running = Running::start(cfg, "mocks")?;
            let started = async {
                let env = running.cfg.env.clone();
                let bound = startup::bind_mocks(&env, &mocks).await?;
                let mocks = startup::mocks(&env, bound, &running.shutdown, &mut running.tasks)?;
                for mock in mocks {
                    println!("{} on {}{}", mock.name, mock.url, mock.path);
                }
                anyhow::Ok(())
            }
            .await;
            running.finish(started).await
        }
        Command::Dev { select } => dev(select.integrations()?).await,
        Command::Status { json } => {
            let cfg = Config::from_env()?;
            let status = crate::status::read(&cfg).await;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                print!("{}", crate::status::render(&status));
            }
            if status.nats.ready && status.postgres.ready {
                Ok(())
            } else {
                anyhow::bail!("not ready: see above")
            }
        }
        Command::Dlq { command } => {
            let cfg = Config::from_env()?;
            let bus = Bus::connect(cfg.nats_url.expose(), &cfg.nats_prefix, "ihub-dlq").await?;
            dlq_command(&bus, command).await
        }
        Command::Parked { command } => {
            let cfg = Config::from_env()?;
            let bus = Bus::connect(cfg.nats_url.expose(), &cfg.nats_prefix, "ihub-parked").await?;
            parked_command(&bus, command).await
        }
        Command::Sign {
            body,
            scheme,
            secret,
            timestamp,
        } => {
            let body = if body == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                body
            };
            let value: serde_json::Value = serde_json::from_str(&body)
                .map_err(|err| anyhow::anyhow!("--body is not JSON: {err}"))?;
            let var = match scheme {
                SignScheme::Wallet => &WALLET_HMAC,
                SignScheme::Newstore => &crate::integrations::newstore::config::NEWSTORE_WEBHOOK,
                SignScheme::Casino => &crate::integrations::casino::config::CASINO_SECRET,
            };
            let secret = secret
                .or_else(|| std::env::var(var.name).ok())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| {
                    eprintln!(
                        "(signing with the demo secret of `ihub dev`; set {} for another hub)",
                        var.name
                    );
                    var.demo.to_string()
                });
            let body_signature =
                crate::signatures::body_signature(&Secret::new(secret.clone()), body.as_bytes());
            match scheme {
                SignScheme::Newstore => {
                    println!("X-NewStore-Signature: {body_signature}");
                    return Ok(());
                }
                SignScheme::Casino => {
                    println!("x-casino-signature: {body_signature}");
                    return Ok(());
                }
                SignScheme::Wallet => {}
            }
            let tolerance = WalletConfig::from_env(&Env::process())?.signature_tolerance;
            let signer = TimestampedHmac::new(Secret::new(secret), tolerance);
            let timestamp = timestamp.unwrap_or_else(unix_now);
            println!("X-Timestamp: {timestamp}");
            println!(
                "X-Signature: {}",
                signer.sign(timestamp, &canonical_json(&value))
            );
            Ok(())
        }
        Command::Simulate {
            command:
                SimulateCommand::Newstore {
                    event,
                    count,
                    order_id,
                    url,
                },
        } => {
            use crate::integrations::newstore::{client, config, domain::EventKind};
            let kind = EventKind::parse(&event).ok_or_else(|| {
                anyhow::anyhow!("--event {event:?}: use order.opened, order.completed, order.cancelled or return.processed")
            })?;
            let env = Env::process();
            let secret = std::env::var(config::NEWSTORE_WEBHOOK.name)
                .unwrap_or_else(|_| config::NEWSTORE_WEBHOOK.demo.to_string());
            let url = match url {
                Some(url) => url,
                None => format!(
                    "http://{}/webhooks/newstore",
                    env.addr("HTTP_ADDR", "127.0.0.1:8000")?
                ),
            };
            let sender = client::Sender {
                http: reqwest::Client::new(),
                url,
                secret: Secret::new(secret),
            };
            client::simulate(&sender, kind, count, order_id.as_deref()).await
        }
        Command::Bench(args) if args.scenario == "casino" => {
            crate::integrations::casino::bench::run(&Config::from_env()?, &args.load()).await
        }
        Command::Bench(args) if args.scenario == "max" => {
            crate::integrations::max::bench::run(&Config::from_env()?, &args.load()).await
        }
        Command::Bench(args) if args.scenario == "newstore" => {
            crate::integrations::newstore::bench::run(&Config::from_env()?, &args.load()).await
        }
        Command::Bench(args) => bench::run(&Config::from_env()?, args).await,
        Command::Chaos(args) => chaos::run(args).await,
    }
}

/// `ihub dev`: the demo settings of `integrations` beneath the environment, setup, then their
/// mocks, consumers and routes in one process, wired to each other.
async fn dev(integrations: Vec<&'static Integration>) -> anyhow::Result<()> {
    let mut secrets: Vec<_> = integrations.iter().flat_map(|i| i.secrets()).collect();
    // Integrations share some (ADMIN_TOKEN): each is filled, and named, once.
    let mut seen = std::collections::HashSet::new();
    secrets.retain(|s| seen.insert(s.name));
    let (env, filled) = Env::process()
        .with_defaults(
            integrations
                .iter()
                .flat_map(|i| i.dev_defaults.iter().copied()),
        )
        .with_demo_secrets(&secrets);
    if !filled.is_empty() {
        eprintln!("using demo values for {} (see README)", filled.join(", "));
    }
    let cfg = Config::load(env)?;
    println!("setting up");
    startup::setup(&cfg, |line| println!("  {line}")).await?;
    let mut running = Running::start(cfg, "dev")?;
    let started = async {
        let ingress_listener =
            server::bind(running.cfg.http_addr, "the ingress", "HTTP_ADDR").await?;
        let (mocks, _) = startup::mocks_of(&integrations);
        let bound = startup::bind_mocks(&running.cfg.env, &mocks).await?;
        // The hub calls the mocks where they listen, and they call it back where it does.
        let wires = startup::wiring(&bound, &server::url_of(&ingress_listener));
        let cfg = Arc::new(running.cfg.with_env(running.cfg.env.with_defaults(wires)));
        let (bus, db) = startup::connect(&cfg, "dev", 32).await?;
        let mocks = startup::mocks(&cfg.env, bound, &running.shutdown, &mut running.tasks)?;
        let consumers = integrations::consumers(&integrations, &[])?;
        startup::consumers(
            &cfg,
            &consumers,
            bus.clone(),
            db.clone(),
            &running.shutdown,
            &mut running.tasks,
        )
        .await?;
        let services = integrations::services(&integrations, &[]);
        startup::services(
            &cfg,
            &services,
            bus.clone(),
            db.clone(),
            &running.shutdown,
            &mut running.tasks,
        )
        .await?;
        let url = startup::ingress(
            &cfg,
            &integrations,
            bus,
            db,
            ingress_listener,
            running.shutdown.clone(),
            &mut running.tasks,
        )
        .await?;
        let mut banner = format!("\nihub dev is running\n  {:<15}{url}\n", "ingress");
        for mock in &mocks {
            banner.push_str(&format!("  {:<15}{}{}\n", mock.name, mock.url, mock.path));
        }
        let durables: Vec<&str> = consumers.iter().map(|c| c.durable()).collect();
        banner.push_str(&format!("  {:<15}{}\n", "consumers", durables.join(", ")));
        let served: Vec<&str> = services.iter().map(|s| s.name).collect();
        if !served.is_empty() {
            banner.push_str(&format!("  {:<15}{}\n", "services", served.join(", ")));
        }
        println!("{banner}ctrl-c stops it; the README has curl examples.");
        anyhow::Ok(())
    }
    .await;
    running.finish(started).await
}

/// A long-lived command: telemetry, one shutdown token (SIGTERM, ctrl-c), and its tasks.
struct Running {
    cfg: Arc<Config>,
    telemetry: telemetry::Telemetry,
    shutdown: CancellationToken,
    tasks: Tasks,
}

impl Running {
    fn start(cfg: Config, command: &str) -> anyhow::Result<Self> {
        let service = cfg
            .service_name
            .clone()
            .unwrap_or_else(|| format!("ihub-{command}"));
        let telemetry = telemetry::init(
            &service,
            cfg.otlp_endpoint.as_deref(),
            telemetry::Logs::Stderr,
        )?;
        Ok(Self {
            cfg: Arc::new(cfg),
            telemetry,
            shutdown: shutdown::on_signal(),
            tasks: Tasks::new(),
        })
    }

    /// Supervises the tasks until they stop (or stops them at once when starting failed),
    /// then flushes spans.
    async fn finish(self, started: anyhow::Result<()>) -> anyhow::Result<()> {
        if started.is_err() {
            self.shutdown.cancel();
        }
        let supervised = startup::supervise(self.tasks, self.shutdown).await;
        self.telemetry.shutdown().await;
        started.and(supervised)
    }
}

async fn parked_command(bus: &Bus, command: ParkedCommand) -> anyhow::Result<()> {
    match command {
        ParkedCommand::List { consumer, json } => {
            let parked = park::list(bus, consumer.as_deref()).await?;
            if json {
                for message in &parked {
                    println!("{}", serde_json::to_string(message)?);
                }
                return Ok(());
            }
            if parked.is_empty() {
                println!("nothing is parked");
                return Ok(());
            }
            println!(
                "{:>6}  {:<18} {:<20} {:<28} {:<25}  reason",
                "seq", "consumer", "key", "original subject", "parked at"
            );
            for p in &parked {
                println!(
                    "{:>6}  {:<18} {:<20} {:<28} {:<25}  {}",
                    p.seq, p.consumer, p.key, p.original_subject, p.parked_at, p.reason
                );
            }
            println!(
                "{} parked message(s); `ihub parked release --consumer C --key K` runs a key's again",
                parked.len()
            );
            Ok(())
        }
        ParkedCommand::Release { consumer, key } => {
            let released = park::release(bus, &consumer, &key).await?;
            println!("released {released} message(s) parked by {consumer} for {key:?}");
            bus.client.flush().await?;
            Ok(())
        }
    }
}

async fn dlq_command(bus: &Bus, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { filter, json } => {
            let letters = dlq::select(bus, &filter.filter()?).await?;
            if json {
                for letter in &letters {
                    println!("{}", serde_json::to_string(letter)?);
                }
                return Ok(());
            }
            if letters.is_empty() {
                println!("no dead letters");
                return Ok(());
            }
            print_letters(&letters);
            println!(
                "{} dead letter(s); `ihub dlq show SEQ` for one, `ihub dlq replay SEQ` to retry it",
                letters.len()
            );
            Ok(())
        }
        DlqCommand::Show { seq } => {
            let letter = dlq::show(bus, seq).await?;
            println!("seq:              {}", letter.seq);
            println!("consumer:         {}", letter.consumer);
            println!("original subject: {}", letter.original_subject);
            println!(
                "original:         stream {} seq {}",
                letter.original_stream,
                letter.original_seq.map_or("?".into(), |s| s.to_string())
            );
            println!(
                "deliveries:       {}",
                letter.deliveries.map_or("?".into(), |d| d.to_string())
            );
            println!("failed at:        {}", letter.failed_at);
            println!("error:            {}", letter.error);
            println!("headers:");
            for (name, value) in &letter.headers {
                println!("  {name}: {value}");
            }
            println!("payload:\n{}", letter.payload);
            Ok(())
        }
        DlqCommand::Replay {
            seq,
            all,
            filter,
            rate,
            dry_run,
        } => {
            let letters = match seq {
                Some(seq) => vec![dlq::show(bus, seq).await?],
                None if all || filter.given() => dlq::select(bus, &filter.filter()?).await?,
                None => anyhow::bail!(
                    "say which: a sequence, --all, or filters (--from, --to, --consumer, --since, --subject)"
                ),
            };
            if letters.is_empty() {
                println!("nothing to replay");
                return Ok(());
            }
            if dry_run {
                print_letters(&letters);
                println!(
                    "dry run: {} dead letter(s) would be replayed; nothing changed",
                    letters.len()
                );
                return Ok(());
            }
            // Every letter of a short replay; a line a second of a long one.
            let total = letters.len();
            let started = std::time::Instant::now();
            let mut shown = started;
            let replayed = dlq::replay_all(bus, &letters, rate, |done, total, letter, new_seq| {
                if total <= 20 {
                    println!(
                        "[{done}/{total}] replayed dead letter {} to {} (stream sequence {new_seq})",
                        letter.seq, letter.original_subject
                    );
                } else if shown.elapsed() >= std::time::Duration::from_secs(1) || done == total {
                    shown = std::time::Instant::now();
                    println!(
                        "[{done}/{total}] replayed, {:.0}/s",
                        done as f64 / started.elapsed().as_secs_f64()
                    );
                }
            })
            .await?;
            println!("replayed {replayed} of {total} dead letter(s)");
            Ok(())
        }
    }
}

fn print_letters(letters: &[dlq::DeadLetter]) {
    println!(
        "{:>6}  {:<18} {:<28} {:>5}  {:<25}  error",
        "seq", "consumer", "original subject", "tries", "failed at"
    );
    for l in letters {
        println!(
            "{:>6}  {:<18} {:<28} {:>5}  {:<25}  {}",
            l.seq,
            l.consumer,
            l.original_subject,
            l.deliveries.map_or("?".into(), |d| d.to_string()),
            l.failed_at,
            l.error
        );
    }
}

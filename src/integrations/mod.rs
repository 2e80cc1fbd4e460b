//! The registry: every integration the hub carries. Adding one is its folders (see the README,
//! "Adding an integration") and its name on the `registry!` line below.

use anyhow::bail;

use crate::integration::Integration;
use crate::nats::provision::ConsumerFile;
use crate::runtime::Consumer;
use crate::runtime::service::Service;
use crate::schemas::Schema;

macro_rules! registry {
    ($($name:ident),* $(,)?) => {
        $(pub mod $name;)*

        /// Every integration, in the order start-up names them.
        pub static ALL: &[&Integration] = &[$(&$name::INTEGRATION),*];
    };
}

registry![wallet, wavegate, newstore, casino, max];

/// `--integrations`: the named integrations, or all of them when none is named.
pub fn select(names: &[String]) -> anyhow::Result<Vec<&'static Integration>> {
    if names.is_empty() {
        return Ok(ALL.to_vec());
    }
    let mut selected: Vec<&'static Integration> = Vec::new();
    for name in names {
        let Some(integration) = ALL.iter().find(|i| i.name == name.trim()) else {
            bail!("unknown integration {name:?}; known: {}", names_of(ALL));
        };
        if !selected.iter().any(|i| i.name == integration.name) {
            selected.push(integration);
        }
    }
    Ok(selected)
}

fn names_of(integrations: &[&Integration]) -> String {
    let names: Vec<&str> = integrations.iter().map(|i| i.name).collect();
    names.join(", ")
}

/// `--only`: the named consumers of `integrations`, or all of theirs when none is named.
pub fn consumers(
    integrations: &[&'static Integration],
    only: &[String],
) -> anyhow::Result<Vec<&'static Consumer>> {
    let all: Vec<&'static Consumer> = integrations
        .iter()
        .flat_map(|i| i.consumers.iter())
        .collect();
    if only.is_empty() {
        return Ok(all);
    }
    let services: Vec<&str> = integrations
        .iter()
        .flat_map(|i| i.services.iter().map(|s| s.name))
        .collect();
    let mut chosen = Vec::new();
    for name in only {
        let name = name.trim();
        if let Some(consumer) = all.iter().find(|c| c.durable() == name) {
            chosen.push(*consumer);
        } else if !services.contains(&name) {
            let known: Vec<&str> = all.iter().map(|c| c.durable()).chain(services).collect();
            bail!(
                "unknown consumer or service {name:?}; known: {}",
                known.join(", ")
            );
        }
    }
    Ok(chosen)
}

/// The services of `integrations` a consumer process serves: all of them, or those `only`
/// names (`ihub consume --only`; [`consumers`] reports unknown names).
pub fn services(integrations: &[&'static Integration], only: &[String]) -> Vec<&'static Service> {
    integrations
        .iter()
        .flat_map(|i| i.services.iter())
        .filter(|s| only.is_empty() || only.iter().any(|name| name.trim() == s.name))
        .collect()
}

/// The consumer definitions of every integration, for `ihub setup`.
pub fn consumer_files() -> Vec<ConsumerFile> {
    ALL.iter()
        .flat_map(|i| i.consumers.iter().map(|c| c.file))
        .collect()
}

/// The schema of the events on `subject` (unprefixed), if an integration publishes there.
pub fn schema_for(subject: &str) -> Option<&'static Schema> {
    ALL.iter()
        .flat_map(|i| i.events.iter())
        .find(|event| event.subject == subject)
        .map(|event| event.schema)
}

#[cfg(test)]
mod tests {
    //! What every integration must get right, checked for each one.

    use std::collections::BTreeSet;

    use super::*;

    use crate::nats::subject_matches as matches;

    #[test]
    fn subjects_match_like_nats() {
        assert!(matches("in.wallet.>", "in.wallet.debit"));
        assert!(matches("out.*.webhook", "out.rgs.webhook"));
        assert!(!matches("in.wallet.>", "in.wallet"));
        assert!(!matches("in.wallet.debit", "in.wallet.debit.x"));
        assert!(!matches("out.rgs.>", "out.rgsx.webhook"));
    }

    #[test]
    fn names_consumers_and_subjects_are_unique_and_shaped() {
        let mut names = BTreeSet::new();
        let mut durables = BTreeSet::new();
        let mut subjects = BTreeSet::new();
        for integration in ALL {
            assert!(names.insert(integration.name), "{} twice", integration.name);
            assert!(
                integration
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "{}: a name is a subject token and a folder name",
                integration.name
            );
            for consumer in integration.consumers {
                assert!(
                    durables.insert(consumer.durable()),
                    "{}",
                    consumer.durable()
                );
                assert!(
                    ["INBOUND", "OUTBOUND"].contains(&consumer.file.stream),
                    "{}",
                    consumer.durable()
                );
                consumer.file.config().expect("its definition parses");
            }
            for event in integration.events {
                assert!(subjects.insert(event.subject), "{} twice", event.subject);
                let inbound = format!("in.{}.", integration.name);
                assert!(
                    event.subject.starts_with(&inbound) || event.subject.starts_with("out."),
                    "{}: inbound subjects are in.{}.<event>",
                    event.subject,
                    integration.name
                );
            }
        }
    }

    /// An event nobody consumes is lost in the stream; one two durables consume is done twice;
    /// a consumer of undeclared events reads payloads no schema describes.
    #[test]
    fn every_event_reaches_exactly_one_consumer_of_its_integration() {
        let filters: Vec<(&str, String)> = ALL
            .iter()
            .flat_map(|i| {
                i.consumers
                    .iter()
                    .map(move |c| (i.name, c.file.config().unwrap().filter_subject))
            })
            .collect();
        for integration in ALL {
            for event in integration.events {
                let takers: Vec<&(&str, String)> = filters
                    .iter()
                    .filter(|(_, filter)| matches(filter, event.subject))
                    .collect();
                assert_eq!(takers.len(), 1, "{}: {takers:?}", event.subject);
                assert_eq!(takers[0].0, integration.name, "{}", event.subject);
            }
            // And what a consumer takes has a schema: the events it reads are declared.
            for consumer in integration.consumers {
                let filter = consumer.file.config().unwrap().filter_subject;
                assert!(
                    integration
                        .events
                        .iter()
                        .any(|event| matches(&filter, event.subject)),
                    "{} takes {filter}, but {} declares no event there",
                    consumer.durable(),
                    integration.name
                );
            }
        }
    }

    /// Every schema file belongs to exactly one integration, compiles, and each event's schema
    /// is one of its integration's.
    #[test]
    fn every_schema_file_is_registered_and_compiles() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let mut on_disk = BTreeSet::new();
        let mut pending = vec![root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let relative = path.strip_prefix(&root).unwrap();
                    on_disk.insert(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let mut registered = BTreeSet::new();
        for integration in ALL {
            for schema in integration.schemas {
                assert!(
                    schema.name.starts_with(&format!("{}/", integration.name)),
                    "{} belongs in schemas/{}/",
                    schema.name,
                    integration.name
                );
                assert!(
                    registered.insert(schema.name.to_string()),
                    "{}",
                    schema.name
                );
                schema.validator();
            }
            for event in integration.events {
                assert!(
                    integration
                        .schemas
                        .iter()
                        .any(|s| std::ptr::eq(*s, event.schema)),
                    "{}: {} is not in its integration's schemas",
                    event.subject,
                    event.schema.name
                );
            }
        }
        assert_eq!(on_disk, registered);
    }

    #[test]
    fn selections_name_what_is_unknown() {
        assert_eq!(select(&[]).unwrap().len(), ALL.len());
        let first = ALL[0].name.to_string();
        assert_eq!(select(&[first.clone(), first]).unwrap().len(), 1);
        let Err(err) = select(&["nowhere".into()]) else {
            panic!("an unknown integration is refused");
        };
        let err = err.to_string();
        assert!(err.contains("unknown integration") && err.contains(ALL[0].name));
        let Err(err) = consumers(ALL, &["deliver-nowhere".into()]) else {
            panic!("an unknown consumer is refused");
        };
        let err = err.to_string();
        assert!(err.contains("unknown consumer"), "{err}");
        let durable = ALL[0].consumers[0].durable().to_string();
        assert_eq!(consumers(ALL, &[durable]).unwrap().len(), 1);
    }
}

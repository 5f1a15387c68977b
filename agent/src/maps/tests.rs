use std::collections::{BTreeMap, BTreeSet};

use super::{
    fake::{FakeMaps, Write},
    *,
};
use crate::model::{Backend, Origin};

fn service(name: &str, vip: &str, policy: Policy, backends: &[(&str, u32)]) -> Service {
    Service {
        name: name.into(),
        namespace: None,
        vip: vip.parse().unwrap(),
        policy,
        backends: backends
            .iter()
            .map(|(addr, weight)| Backend::new(addr.parse().unwrap(), *weight))
            .collect(),
        origin: Origin::default(),
    }
}

fn mesh(services: impl IntoIterator<Item = Service>) -> Mesh {
    Mesh {
        services: services.into_iter().map(|s| (s.vip, s)).collect(),
        ..Mesh::default()
    }
}

fn echo(backends: &[(&str, u32)]) -> Service {
    service("echo", "198.18.0.10:80", Policy::RoundRobin, backends)
}

fn canary() -> Service {
    service(
        "canary",
        "[fd00::20]:443",
        Policy::Weighted,
        &[("[fd00::1]:8443", 9), ("[fd00::2]:8443", 1)],
    )
}

fn cache() -> Service {
    service(
        "cache",
        "198.18.0.30:6379",
        Policy::Random,
        &[("10.0.0.1:6379", 1)],
    )
}

fn backend_at(addr: &str, cumulative_weight: u32) -> BackendValue {
    let addr: SocketAddr = addr.parse().unwrap();
    let (words, family) = ip_to_words(addr.ip());
    BackendValue {
        addr: words,
        port: addr.port(),
        family,
        cumulative_weight,
    }
}

/// The writer over empty fake maps, with `mesh` applied and the log cleared.
fn writer_with(mesh: &Mesh) -> MapWriter<FakeMaps> {
    let mut writer = MapWriter::adopt(FakeMaps::default());
    writer.apply(mesh).expect("the first apply");
    writer.maps.writes.clear();
    writer
}

/// What connect() reads for a VIP: the policy, the total weight and the
/// backends 0..backend_count of the generation the service points at
/// (`None` where one is missing).
#[derive(Debug, PartialEq)]
struct Seen {
    policy: u32,
    total_weight: u32,
    backends: Vec<Option<BackendValue>>,
}

fn seen_by_connect(maps: &FakeMaps) -> BTreeMap<ServiceKey, Seen> {
    maps.services
        .iter()
        .map(|(key, value)| {
            let backends = (0..value.backend_count)
                .map(|index| {
                    maps.backend(&BackendKey {
                        service_id: value.service_id,
                        generation: value.generation,
                        index,
                    })
                })
                .collect();
            let seen = Seen {
                policy: value.policy,
                total_weight: value.total_weight,
                backends,
            };
            (*key, seen)
        })
        .collect()
}

/// Replays `writes` on the maps as they were before them and checks, after
/// every single write, that each VIP routes by its old service or its new
/// one, whole: never a missing backend, never old and new backends mixed,
/// never a service gone in the middle of an update. Returns the maps after
/// the last write.
fn replay_checking_connect(mut maps: FakeMaps, writes: &[Write]) -> FakeMaps {
    let old = seen_by_connect(&maps);
    let mut end = maps.clone();
    for write in writes {
        let _ = end.perform(*write);
    }
    let new = seen_by_connect(&end);
    for (step, write) in writes.iter().enumerate() {
        let _ = maps.perform(*write);
        let now = seen_by_connect(&maps);
        for (key, seen) in &now {
            assert!(
                old.get(key) == Some(seen) || new.get(key) == Some(seen),
                "after write {step} ({write:?}) connect() to {key:?} sees {seen:?}, \
                 neither the old service {:?} nor the new {:?}",
                old.get(key),
                new.get(key),
            );
        }
        for key in old.keys().filter(|k| new.contains_key(k)) {
            assert!(
                now.contains_key(key),
                "after write {step} ({write:?}) {key:?} is gone from the services map"
            );
        }
    }
    maps
}

/// Applies `mesh`, checking every write it does with
/// [`replay_checking_connect`], and that the replay ends where the writer did.
fn apply_checking_connect(
    writer: &mut MapWriter<FakeMaps>,
    mesh: &Mesh,
) -> Result<ApplyReport, MapWriteError> {
    let mut before = writer.maps.clone();
    before.writes.clear();
    let result = writer.apply(mesh);
    let replayed = replay_checking_connect(before, &writer.maps.writes);
    assert_eq!(replayed.services, writer.maps.services);
    assert_eq!(replayed.backends, writer.maps.backends);
    result
}

/// The backends map holds exactly the live generation of every service and
/// the generations the last apply retired; after one more apply of the same
/// mesh, only the live ones.
fn assert_live_and_last_retired_generations(writer: &mut MapWriter<FakeMaps>) {
    let maps = &writer.maps;
    let live: BTreeSet<(u32, u32)> = maps
        .services
        .values()
        .map(|v| (v.service_id, v.generation))
        .chain(writer.retired.iter().map(|r| (r.service_id, r.generation)))
        .collect();
    for key in maps.backends.keys() {
        assert!(
            live.contains(&(key.service_id, key.generation)),
            "{key:?} is left from a generation neither live nor retired by the last apply"
        );
    }
    let live_backends: u32 = maps.services.values().map(|v| v.backend_count).sum();
    let retired: usize = writer.retired.iter().map(|r| r.count).sum();
    assert_eq!(maps.backends.len(), live_backends as usize + retired);
    assert_eq!(writer.entries().backends, maps.backends.len() as u64);
}

fn service_value(maps: &FakeMaps, service: &Service) -> ServiceValue {
    maps.services[&service_key(service)]
}

#[test]
fn a_new_mesh_is_written_with_ids_generations_policies_and_cumulative_weights() {
    let weighted = service(
        "weighted",
        "198.18.0.1:80",
        Policy::Weighted,
        &[("10.0.0.1:80", 3), ("10.0.0.2:80", 0), ("10.0.0.3:80", 2)],
    );
    let round_robin = service(
        "rr",
        "198.18.0.2:80",
        Policy::RoundRobin,
        &[("10.0.0.1:80", 1), ("10.0.0.2:80", 0), ("10.0.0.3:80", 5)],
    );
    let random = service(
        "random",
        "[fd00::3]:80",
        Policy::Random,
        &[("10.0.0.1:80", 0), ("[fd00::4]:80", 4)],
    );
    let mesh = mesh([weighted.clone(), round_robin.clone(), random.clone()]);
    let mut writer = MapWriter::adopt(FakeMaps::default());

    let report = writer.apply(&mesh).unwrap();

    assert_eq!(
        report,
        ApplyReport {
            added: 3,
            ..ApplyReport::default()
        }
    );
    // Weighted keeps the weight-0 backend so indices match the config;
    // the others drain it and count each remaining backend once.
    let expected = [
        (
            &weighted,
            policy::WEIGHTED,
            vec![
                backend_at("10.0.0.1:80", 3),
                backend_at("10.0.0.2:80", 3),
                backend_at("10.0.0.3:80", 5),
            ],
        ),
        (
            &round_robin,
            policy::ROUND_ROBIN,
            vec![backend_at("10.0.0.1:80", 1), backend_at("10.0.0.3:80", 2)],
        ),
        (&random, policy::RANDOM, vec![backend_at("[fd00::4]:80", 1)]),
    ];
    let ids: BTreeMap<SocketAddr, u32> = writer.service_ids().collect();
    for (service, policy, backends) in expected {
        let value = service_value(&writer.maps, service);
        assert_eq!(value.service_id, ids[&service.vip], "{}", service.name);
        assert_eq!(value.generation, 1, "{}", service.name);
        assert_eq!(value.policy, policy, "{}", service.name);
        assert_eq!(
            value.backend_count as usize,
            backends.len(),
            "{}",
            service.name
        );
        assert_eq!(
            value.total_weight,
            backends.last().unwrap().cumulative_weight,
            "{}",
            service.name
        );
        let written: Vec<Option<BackendValue>> = seen_by_connect(&writer.maps)
            .remove(&service_key(service))
            .unwrap()
            .backends;
        let backends: Vec<Option<BackendValue>> = backends.into_iter().map(Some).collect();
        assert_eq!(written, backends, "{}", service.name);
    }
    assert_eq!(
        ids.values().copied().collect::<BTreeSet<_>>(),
        [1, 2, 3].into()
    );
    assert_eq!(
        writer.entries(),
        MapEntries {
            services: 3,
            backends: 6
        }
    );
    assert_live_and_last_retired_generations(&mut writer);
}

#[test]
fn applying_the_same_mesh_again_writes_nothing() {
    let mesh = mesh([echo(&[("127.0.0.2:8080", 1)]), canary(), cache()]);
    let mut writer = writer_with(&mesh);

    let report = writer.apply(&mesh).unwrap();

    assert_eq!(
        report,
        ApplyReport {
            unchanged: 3,
            ..ApplyReport::default()
        }
    );
    assert_eq!(writer.maps.writes, []);
}

#[test]
fn connect_sees_the_old_backends_or_the_new_never_a_mix() {
    let before = echo(&[("127.0.0.2:8080", 1), ("127.0.0.3:8080", 1)]);
    let mut writer = writer_with(&mesh([before.clone(), canary()]));
    let id = service_value(&writer.maps, &before).service_id;
    let mut reweighted = canary();
    reweighted.backends[1].weight = 5;
    let after = echo(&[
        ("127.0.0.4:8080", 1),
        ("127.0.0.5:8080", 1),
        ("127.0.0.6:8080", 1),
    ]);

    let report = apply_checking_connect(&mut writer, &mesh([after.clone(), reweighted])).unwrap();

    assert_eq!(
        report,
        ApplyReport {
            updated: 2,
            ..ApplyReport::default()
        }
    );
    let value = service_value(&writer.maps, &after);
    assert_eq!((value.service_id, value.generation), (id, 2));
    assert_live_and_last_retired_generations(&mut writer);
}

#[test]
fn adding_and_removing_services_keeps_every_service_whole() {
    let echo = echo(&[("127.0.0.2:8080", 1)]);
    let mut writer = writer_with(&mesh([echo.clone(), canary()]));

    let added = apply_checking_connect(&mut writer, &mesh([echo.clone(), canary(), cache()]));
    assert_eq!(
        added.unwrap(),
        ApplyReport {
            added: 1,
            unchanged: 2,
            ..ApplyReport::default()
        }
    );
    let removed = apply_checking_connect(&mut writer, &mesh([echo.clone()]));
    assert_eq!(
        removed.unwrap(),
        ApplyReport {
            removed: 2,
            unchanged: 1,
            ..ApplyReport::default()
        }
    );

    assert_eq!(writer.maps.services.len(), 1);
    assert_live_and_last_retired_generations(&mut writer);
}

#[test]
fn a_removed_service_keeps_its_backends_one_apply_longer() {
    let canary = canary();
    let mut writer = writer_with(&mesh([canary.clone(), cache()]));
    let id = service_value(&writer.maps, &canary).service_id;
    let removed_backends = |writes: &[Write]| {
        writes
            .iter()
            .filter(|w| matches!(w, Write::RemoveBackend(k) if k.service_id == id))
            .count()
    };

    writer.apply(&mesh([cache()])).unwrap();
    assert!(
        writer
            .maps
            .writes
            .contains(&Write::RemoveService(service_key(&canary)))
    );
    assert_eq!(removed_backends(&writer.maps.writes), 0, "removed at once");

    writer.maps.writes.clear();
    writer.apply(&mesh([cache()])).unwrap();
    assert_eq!(removed_backends(&writer.maps.writes), canary.backends.len());
    assert_live_and_last_retired_generations(&mut writer);
    assert!(writer.retired.is_empty());
}

/// Replays `writes` on `maps`, calling `check` with the maps and the write
/// after each write; returns the maps at the end.
fn replay(
    mut maps: FakeMaps,
    writes: &[Write],
    mut check: impl FnMut(&FakeMaps, &Write),
) -> FakeMaps {
    for write in writes {
        let _ = maps.perform(*write);
        check(&maps, write);
    }
    maps
}

fn has_all_backends(maps: &FakeMaps, value: &ServiceValue) -> bool {
    (0..value.backend_count).all(|index| {
        maps.backend(&BackendKey {
            service_id: value.service_id,
            generation: value.generation,
            index,
        })
        .is_some()
    })
}

#[test]
fn a_connect_slowed_by_a_whole_apply_still_finds_the_backends_it_picked_from() {
    // connect() reads the service, then one backend of the generation it
    // read; orchestration reads the service again when that backend is gone.
    // The writer keeps that safe for a connect() stalled between its two
    // reads for as long as a whole apply: every service value visible at
    // any write of one apply keeps its backends through the writes of the
    // next, until that apply's removals, which come after its own swaps.
    let versions = [
        echo(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 1)]),
        echo(&[("10.0.0.3:80", 1)]),
        echo(&[("10.0.0.4:80", 1), ("10.0.0.5:80", 1), ("10.0.0.6:80", 1)]),
        echo(&[("10.0.0.7:80", 1)]),
    ];
    let key = service_key(&versions[0]);
    let mut writer = writer_with(&mesh([versions[0].clone()]));
    let mut read_during_last_apply = vec![writer.maps.services[&key]];
    for version in &versions[1..] {
        writer.maps.writes.clear();
        let before = writer.maps.clone();
        writer.apply(&mesh([version.clone()])).unwrap();
        let mut read_now = vec![before.services[&key]];
        let mut removing = false;
        replay(before, &writer.maps.writes, |maps, write| {
            read_now.push(maps.services[&key]);
            removing |= matches!(write, Write::RemoveBackend(_));
            if removing {
                // Removals come last, with the service on its newest
                // generation, whole, for the connect() that reads it again.
                assert!(has_all_backends(maps, &maps.services[&key]), "{write:?}");
                return;
            }
            for value in read_during_last_apply.iter().chain(&read_now) {
                assert!(
                    has_all_backends(maps, value),
                    "after {write:?}, a connect() that read generation {} finds its backends gone",
                    value.generation
                );
            }
        });
        read_during_last_apply = read_now;
    }
}

#[test]
fn a_service_entry_already_gone_from_the_map_is_still_removed() {
    let canary = canary();
    let mut writer = writer_with(&mesh([canary.clone(), cache()]));
    writer.maps.services.remove(&service_key(&canary));

    let report = writer.apply(&mesh([cache()])).unwrap();

    assert_eq!(report.removed, 1);
    assert_live_and_last_retired_generations(&mut writer);
    assert_eq!(writer.entries().services, 1);
}

/// Maps as an earlier agent left them: `echo` under id 7 and `canary` under
/// id 42, both at generation 9, and backends of generations no service
/// points at.
fn earlier_agents_maps(echo: &Service, canary: &Service) -> (FakeMaps, Vec<BackendKey>) {
    let mut maps = FakeMaps::default();
    for (service, service_id) in [(echo, 7), (canary, 42)] {
        let backends = backend_values(service);
        for (index, value) in backends.iter().enumerate() {
            let key = BackendKey {
                service_id,
                generation: 9,
                index: index as u32,
            };
            maps.backends.insert(key, *value);
        }
        let value = ServiceValue {
            service_id,
            generation: 9,
            backend_count: backends.len() as u32,
            total_weight: backends.last().unwrap().cumulative_weight,
            policy: policy_code(service.policy),
            ..ServiceValue::default()
        };
        maps.services.insert(service_key(service), value);
    }
    let orphans = vec![
        // A generation written by an agent that stopped before pointing
        // the service at it.
        BackendKey {
            service_id: 42,
            generation: 10,
            index: 0,
        },
        // A service removed by an agent that stopped before its backends.
        BackendKey {
            service_id: 3,
            generation: 1,
            index: 0,
        },
    ];
    for key in &orphans {
        maps.backends.insert(*key, backend_at("10.9.9.9:80", 1));
    }
    (maps, orphans)
}

#[test]
fn adopts_an_earlier_agents_maps_and_sweeps_their_orphan_backends() {
    let echo = echo(&[("127.0.0.2:8080", 1)]);
    let canary = canary();
    let (maps, orphans) = earlier_agents_maps(&echo, &canary);

    let mut writer = MapWriter::adopt(maps);
    let adopted: BTreeMap<SocketAddr, u32> = writer.service_ids().collect();
    assert_eq!(adopted, [(echo.vip, 7), (canary.vip, 42)].into());
    let report = writer.apply(&mesh([echo.clone(), canary.clone()])).unwrap();

    assert_eq!(
        report,
        ApplyReport {
            unchanged: 2,
            ..ApplyReport::default()
        }
    );
    let mut removed: Vec<BackendKey> = writer
        .maps
        .writes
        .iter()
        .map(|w| match w {
            Write::RemoveBackend(key) => *key,
            other => panic!("an unchanged mesh wrote {other:?}"),
        })
        .collect();
    removed.sort_by_key(|k| (k.service_id, k.generation, k.index));
    assert_eq!(removed, [orphans[1], orphans[0]]);
    assert_live_and_last_retired_generations(&mut writer);

    writer.apply(&mesh([echo, canary, cache()])).unwrap();
    let added = service_value(&writer.maps, &cache());
    assert_eq!((added.service_id, added.generation), (43, 1));
}

#[test]
fn a_full_backends_map_fails_the_apply_and_the_service_keeps_its_old_generation() {
    let before = echo(&[("127.0.0.2:8080", 1)]);
    let mut writer = writer_with(&mesh([before.clone()]));
    // Room for one backend of the new generation, not both.
    writer.maps.backend_capacity = writer.maps.backends.len() + 1;
    let after = echo(&[("127.0.0.3:8080", 1), ("127.0.0.4:8080", 1)]);

    let error = apply_checking_connect(&mut writer, &mesh([after])).unwrap_err();

    let message = error.to_string();
    for part in ["backends", "echo (198.18.0.10:80)", "raise its size"] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    let value = service_value(&writer.maps, &before);
    assert_eq!(value.generation, 1);
    assert_eq!(
        writer.maps.backends.len(),
        1,
        "the partial new generation is swept at once"
    );

    // The operator goes back to the mesh that fits.
    let report = apply_checking_connect(&mut writer, &mesh([before])).unwrap();
    assert_eq!(report.unchanged, 1);
    assert_live_and_last_retired_generations(&mut writer);
}

#[test]
fn round_robin_goes_on_from_its_cursor_across_an_update() {
    let two = echo(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 1)]);
    let mut writer = writer_with(&mesh([two.clone()]));
    // Seven connects since the last update.
    let key = service_key(&two);
    writer.maps.services.get_mut(&key).unwrap().rr_cursor = 7;
    let three = echo(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 1), ("10.0.0.3:80", 1)]);
    writer.apply(&mesh([three.clone()])).unwrap();
    let now = service_value(&writer.maps, &three);
    assert_eq!((now.generation, now.rr_cursor), (2, 7));
}

#[test]
fn new_services_start_round_robin_at_different_points() {
    let starts: BTreeSet<u64> = (0..4)
        .map(|_| {
            let writer = writer_with(&mesh([echo(&[("10.0.0.1:80", 1)])]));
            service_value(&writer.maps, &echo(&[])).rr_cursor
        })
        .collect();
    assert!(starts.len() > 1, "every new service started at {starts:?}");
}

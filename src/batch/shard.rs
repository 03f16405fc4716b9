//! Shards (`--shard K/N`): which items one of N cooperating runs sends. Apart because it
//! depends on nothing but an item's index, which is stable for a given file, and on the job
//! system's variables for `--shard auto`, read through a function so the rules are testable.

/// True when item `index` belongs to `shard = Some((k, n))`, i.e. `index % n == k`.
/// `None` (no sharding) and the invalid `n == 0` accept every index; validate
/// user input with [`parse_shard`].
pub fn in_shard(index: u64, shard: Option<(u64, u64)>) -> bool {
    match shard {
        Some((k, n)) if n > 0 => index % n == k,
        _ => true,
    }
}

/// Parses a `K/N` shard spec (0-based `K < N`).
pub fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("invalid shard {s:?} (expected K/N with 0 <= K < N)");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let k: u64 = k.trim().parse().map_err(|_| bad())?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    if k < n {
        Ok((k, n))
    } else {
        Err(bad())
    }
}

/// A shard `--shard auto` resolved, and where its two numbers came from (for the log line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoShard {
    pub index: u64,
    pub count: u64,
    pub index_from: &'static str,
    pub count_from: String,
}

/// Why `--shard auto` refused: what it saw, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRefusal {
    pub message: String,
    pub hint: String,
}

const COUNT_HINT: &str = "give the job's shard count: --shard auto/N (N = the number of shards the job was split \
     into), or `sizeup plan --shards N` and --plan; with Slurm, submit --array=0-(N-1) and re-run a failed task with \
     `sbatch --array=K` and the same count";

/// `--shard auto`: the index from the job system (`JOB_COMPLETION_INDEX`, Kubernetes; or
/// `SLURM_ARRAY_TASK_ID`), the count from `count` (`--shard auto/N` or the plan's `shards`),
/// else `SIZEUP_SHARDS`, else the job system's own. A count given explicitly always wins over
/// the scheduler's, since a re-run of one task is an array of one: its
/// `SLURM_ARRAY_TASK_COUNT` is 1, and believing it would send the whole job again.
/// Where the scheduler's variables cannot name a shard for certain (an index outside the
/// count, a stepped or offset array, a one-task re-run without an explicit count) this refuses
/// rather than guesses; every task of such an array sees the same variables, so every task
/// refuses before it sends.
pub fn resolve_auto(
    get: impl Fn(&str) -> Option<String>,
    count: Option<(u64, String)>,
) -> Result<AutoShard, ShardRefusal> {
    let num = |name: &str| -> Result<Option<u64>, ShardRefusal> {
        match get(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Ok(None),
            Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| ShardRefusal {
                message: format!("--shard auto: {name}={v:?} is not a whole number"),
                hint: "fix the variable, or give --shard K/N".into(),
            }),
        }
    };
    let explicit = match count {
        Some(c) => Some(c),
        None => num("SIZEUP_SHARDS")?.map(|n| (n, "SIZEUP_SHARDS".to_string())),
    };
    if let Some((0, from)) = &explicit {
        return Err(refusal(
            format!("--shard auto: the shard count ({from}) is 0"),
            "give a count of at least 1",
        ));
    }
    if let Some(index) = num("JOB_COMPLETION_INDEX")? {
        let (count, count_from) = match explicit {
            Some(c) => c,
            None => match num("JOB_COMPLETION_COUNT")? {
                Some(n) => (n, "JOB_COMPLETION_COUNT".to_string()),
                None => {
                    return Err(refusal(
                        format!("--shard auto: JOB_COMPLETION_INDEX={index} but no shard count"),
                        "set JOB_COMPLETION_COUNT to the Job's completions, or give --shard auto/N",
                    ))
                }
            },
        };
        if index >= count {
            return Err(refusal(
                format!("--shard auto: JOB_COMPLETION_INDEX={index} is outside the {count} shards ({count_from})"),
                "the Job's completions and the shard count must be the same",
            ));
        }
        return Ok(AutoShard {
            index,
            count,
            index_from: "JOB_COMPLETION_INDEX",
            count_from,
        });
    }
    let Some(id) = num("SLURM_ARRAY_TASK_ID")? else {
        return Err(refusal(
            "--shard auto: no shard index in the environment (neither JOB_COMPLETION_INDEX nor SLURM_ARRAY_TASK_ID)",
            "run it as a Kubernetes Indexed Job or a Slurm array task, or give --shard K/N",
        ));
    };
    let (min, max) = (num("SLURM_ARRAY_TASK_MIN")?, num("SLURM_ARRAY_TASK_MAX")?);
    let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1);
    let tasks = num("SLURM_ARRAY_TASK_COUNT")?;
    let seen = format!(
        "SLURM_ARRAY_TASK_ID={id} in an array of {} (ids {}..={}, step {step})",
        tasks.map_or("?".into(), |n| n.to_string()),
        min.map_or("?".into(), |n| n.to_string()),
        max.map_or("?".into(), |n| n.to_string()),
    );
    if let Some((count, count_from)) = explicit {
        // The ids are the shard indices. An array whose ids reach past the count is wrong for
        // every task, and every task can tell: refuse in all of them, not just the last ones,
        // or the tasks that run would report success for a job half sent.
        let top = max.unwrap_or(id).max(id);
        if top >= count {
            return Err(refusal(
                format!("--shard auto: {seen} reaches id {top}, outside the {count} shards ({count_from}); no task of this array sends"),
                "submit --array=0-(N-1) for N shards (ids are the shard indices; no step, no offset)",
            ));
        }
        return Ok(AutoShard {
            index: id,
            count,
            index_from: "SLURM_ARRAY_TASK_ID",
            count_from,
        });
    }
    let Some(tasks) = tasks else {
        return Err(refusal(
            format!("--shard auto: {seen}, but no SLURM_ARRAY_TASK_COUNT"),
            COUNT_HINT,
        ));
    };
    // Only a whole array 0..N-1 names its own count; a re-run of one task, a stepped array or
    // one starting at 1 does not.
    if min != Some(0) || max != Some(tasks.saturating_sub(1)) || step != 1 {
        let why = if tasks == 1 {
            "a one-task array (as a re-run of one task is) cannot tell how many shards the job has"
        } else if step != 1 {
            "a stepped array's ids are not the shard indices 0..N-1"
        } else {
            "the array's ids are not 0..N-1"
        };
        return Err(refusal(format!("--shard auto: {seen}: {why}"), COUNT_HINT));
    }
    Ok(AutoShard {
        index: id,
        count: tasks,
        index_from: "SLURM_ARRAY_TASK_ID",
        count_from: "SLURM_ARRAY_TASK_COUNT".into(),
    })
}

fn refusal(message: impl Into<String>, hint: impl Into<String>) -> ShardRefusal {
    ShardRefusal {
        message: message.into(),
        hint: hint.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_indices() {
        for n in 1..6u64 {
            for index in 0..100u64 {
                let owners = (0..n).filter(|&k| in_shard(index, Some((k, n)))).count();
                assert_eq!(owners, 1);
            }
        }
        assert!(in_shard(7, None));
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        for bad in ["4/4", "1", "a/b", "0/0", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    fn slurm<'a>(
        id: &'a str,
        count: &'a str,
        min: &'a str,
        max: &'a str,
        step: &'a str,
    ) -> Vec<(&'static str, &'a str)> {
        vec![
            ("SLURM_ARRAY_TASK_ID", id),
            ("SLURM_ARRAY_TASK_COUNT", count),
            ("SLURM_ARRAY_TASK_MIN", min),
            ("SLURM_ARRAY_TASK_MAX", max),
            ("SLURM_ARRAY_TASK_STEP", step),
        ]
    }

    fn pair(r: Result<AutoShard, ShardRefusal>) -> Result<(u64, u64), String> {
        r.map(|a| (a.index, a.count)).map_err(|e| e.message)
    }

    #[test]
    fn a_whole_slurm_array_names_index_and_count() {
        for id in 0..4 {
            let vars = slurm(["0", "1", "2", "3"][id], "4", "0", "3", "1");
            assert_eq!(pair(resolve_auto(env(&vars), None)), Ok((id as u64, 4)));
        }
    }

    #[test]
    fn a_rerun_task_refuses_without_a_count_and_is_its_shard_with_one() {
        // `sbatch --array=2 job.sbatch`, as the Slurm test saw it.
        let vars = slurm("2", "1", "2", "2", "1");
        let err = pair(resolve_auto(env(&vars), None)).unwrap_err();
        assert!(err.contains("one-task array"), "{err}");
        assert_eq!(
            pair(resolve_auto(env(&vars), Some((4, "--shard auto/4".into())))),
            Ok((2, 4))
        );
        let mut with_env = vars.clone();
        with_env.push(("SIZEUP_SHARDS", "4"));
        assert_eq!(pair(resolve_auto(env(&with_env), None)), Ok((2, 4)));
        // An explicit count beats SIZEUP_SHARDS, and both beat the array's own count.
        assert_eq!(pair(resolve_auto(env(&with_env), Some((3, "plan".into())))), Ok((2, 3)));
    }

    #[test]
    fn a_stepped_array_is_refused_by_every_task() {
        // `--array=0-6:2`: ids 0, 2, 4, 6; COUNT 4.
        for id in ["0", "2", "4", "6"] {
            let vars = slurm(id, "4", "0", "6", "2");
            let err = pair(resolve_auto(env(&vars), None)).unwrap_err();
            assert!(err.contains("stepped"), "{err}");
            let err = pair(resolve_auto(env(&vars), Some((4, "--shard auto/4".into())))).unwrap_err();
            assert!(err.contains("no task of this array sends"), "{err}");
        }
        // A re-run of the failed tasks 0 and 2 of four (`--array=0,2`) is served with the count.
        let vars = slurm("2", "2", "0", "2", "1");
        assert!(resolve_auto(env(&vars), None).is_err());
        assert_eq!(pair(resolve_auto(env(&vars), Some((4, "x".into())))), Ok((2, 4)));
    }

    #[test]
    fn an_offset_array_and_bad_variables_are_refused() {
        let vars = slurm("1", "4", "1", "4", "1");
        assert!(pair(resolve_auto(env(&vars), None)).unwrap_err().contains("not 0..N-1"));
        assert!(resolve_auto(env(&vars), Some((4, "x".into()))).is_err());
        let vars = slurm("x", "4", "0", "3", "1");
        assert!(pair(resolve_auto(env(&vars), None))
            .unwrap_err()
            .contains("not a whole number"));
        assert!(resolve_auto(env(&[]), None).is_err());
        assert!(resolve_auto(env(&slurm("0", "4", "0", "3", "1")), Some((0, "x".into()))).is_err());
    }

    #[test]
    fn kubernetes_index_needs_a_count_in_range() {
        let vars = [("JOB_COMPLETION_INDEX", "3"), ("JOB_COMPLETION_COUNT", "4")];
        assert_eq!(pair(resolve_auto(env(&vars), None)), Ok((3, 4)));
        assert_eq!(pair(resolve_auto(env(&vars[..1]), Some((8, "x".into())))), Ok((3, 8)));
        assert!(resolve_auto(env(&vars[..1]), None).is_err());
        assert!(resolve_auto(env(&vars), Some((3, "x".into()))).is_err());
    }
}

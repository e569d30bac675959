-- provenroute projections, baseline. Normalized (no JSON columns), composite primary keys,
-- one insert-only table per fact so a replay of the same log gives the same rows.
-- Unqualified names: the migrator runs this with search_path set to the target schema.

create table projection_offsets (
    topic        text   not null,
    partition    int    not null,
    next_offset  bigint not null check (next_offset >= 0),
    primary key (topic, partition)
);

create table projection_errors (
    topic        text   not null,
    partition    int    not null,
    "offset"     bigint not null,
    event_type   text,
    reason       text   not null,
    raw_excerpt  text,
    primary key (topic, partition, "offset")
);

-- admin ------------------------------------------------------------------------------

create table benchmark_configs (
    config_id                     text primary key,  -- the BenchmarkConfigSaved event id
    saved_at                      timestamptz not null,
    correlation_id                text,
    min_accuracy                  double precision not null,
    switch_cost_factor            double precision not null,
    max_concurrency               int not null,
    classifier_repetitions        int not null,
    decider_repetitions           int not null,
    classifier_max_p95_latency_ms int,
    acceptance                    text not null,
    benchmark_identity            text
);

create table config_classifier_models (
    config_id  text not null references benchmark_configs on delete cascade,
    position   int  not null,
    model      text not null,
    primary key (config_id, position),
    unique (config_id, model)
);

create table config_decider_models (
    config_id         text not null references benchmark_configs on delete cascade,
    position          int  not null,
    model             text not null,
    reasoning_effort  text not null,
    primary key (config_id, position),
    unique (config_id, model)
);

create table classifier_overrides (
    event_id        text primary key,
    set_at          timestamptz not null,
    model           text,  -- null: cleared
    correlation_id  text
);

create table command_outcomes (
    event_id      text primary key,
    command_id    text,
    command_type  text,
    outcome       text not null check (outcome in ('accepted', 'rejected')),
    reason        text,
    raw_excerpt   text,
    occurred_at   timestamptz not null
);
create index command_outcomes_command on command_outcomes (command_id);

-- runs ---------------------------------------------------------------------------------

create table runs (
    run_id                        text primary key,
    kind                          text not null check (kind in ('classifier', 'decider')),
    force                         boolean not null,
    started_at                    timestamptz not null,
    dataset_size                  int not null,
    correlation_id                text,
    event_id                      text not null,
    -- config snapshot taken when the run started
    min_accuracy                  double precision not null,
    switch_cost_factor            double precision not null,
    max_concurrency               int not null,
    classifier_repetitions        int not null,
    decider_repetitions           int not null,
    classifier_max_p95_latency_ms int,
    acceptance                    text not null,
    benchmark_identity            text
);
create index runs_started on runs (started_at);

create table run_config_classifier_models (
    run_id    text not null references runs on delete cascade,
    position  int  not null,
    model     text not null,
    primary key (run_id, position),
    unique (run_id, model)
);

create table run_config_decider_models (
    run_id            text not null references runs on delete cascade,
    position          int  not null,
    model             text not null,
    reasoning_effort  text not null,
    primary key (run_id, position),
    unique (run_id, model)
);

create table run_models (
    run_id            text not null references runs on delete cascade,
    model             text not null,
    disposition       text not null check (disposition in ('enqueued', 'carried')),
    reasoning_effort  text,
    source_run_id     text,  -- carried: the run that measured the summaries
    occurred_at       timestamptz not null,
    primary key (run_id, model)
);

create table run_fanouts (
    run_id            text primary key references runs on delete cascade,
    jobs              int not null,
    expected_results  int not null,
    occurred_at       timestamptz not null
);

create table run_completions (
    run_id        text primary key references runs on delete cascade,
    graded        int not null,
    ungraded      int not null,
    expected      int not null,
    completed_at  timestamptz not null
);

-- results ------------------------------------------------------------------------------

create table case_results (
    run_id                  text not null references runs on delete cascade,
    model                   text not null,
    case_id                 text not null,
    rep                     int  not null,
    event_id                text not null,  -- derived from the key: no index needed
    kind                    text not null,
    tier                    text not null,
    score                   double precision not null,
    latency_ms              double precision not null,
    cost_usd                double precision,
    timed_out               boolean not null,
    job_id                  text not null,
    answer_excerpt          text,
    occurred_at             timestamptz not null,
    -- classifier runs: the parsed (or fallback) classification
    cls_task_type           text,
    cls_subtask_type        text,
    cls_reasoning           text,
    cls_context             text,
    cls_execution_mode      text,
    cls_requires_tools      boolean,
    cls_risk                text,
    cls_fallback            boolean,
    cls_fallback_reason     text,
    primary key (run_id, model, case_id, rep)
);


create table case_result_diagnostics (
    run_id   text not null,
    model    text not null,
    case_id  text not null,
    rep      int  not null,
    key      text not null,
    value    text not null,
    primary key (run_id, model, case_id, rep, key),
    foreign key (run_id, model, case_id, rep) references case_results on delete cascade
);

create table dead_lettered_jobs (
    run_id       text not null references runs on delete cascade,
    job_id       text not null,
    model        text not null,
    rep          int  not null,
    attempts     int  not null,
    error        text not null,
    occurred_at  timestamptz not null,
    primary key (run_id, job_id)
);

create table dead_lettered_cases (
    run_id   text not null,
    job_id   text not null,
    case_id  text not null,
    primary key (run_id, job_id, case_id),
    foreign key (run_id, job_id) references dead_lettered_jobs on delete cascade
);

create table model_summaries (
    run_id                text not null references runs on delete cascade,
    model                 text not null,
    tier                  text not null,
    accuracy              double precision not null,
    accuracy_lower_bound  double precision not null,
    graded                int not null,
    avg_cost_usd          double precision,
    p95_latency_ms        double precision,
    timeouts              int not null,
    carried               boolean not null,
    source_run_id         text,
    occurred_at           timestamptz not null,
    primary key (run_id, model, tier)
);

-- publishing ---------------------------------------------------------------------------

create table routing_tables (
    version             text primary key,  -- the publishing run's id
    run_id              text not null references runs on delete cascade,
    published_at        timestamptz not null,
    min_accuracy        double precision not null,
    switch_cost_factor  double precision not null,
    acceptance          text not null,
    event_id            text not null,
    occurred_at         timestamptz not null
);
create index routing_tables_published on routing_tables (published_at);

create table routing_table_candidates (
    version               text not null references routing_tables on delete cascade,
    tier                  text not null,
    rank                  int  not null,  -- 1 = the tier's first pick
    model                 text not null,
    reasoning_effort      text not null,
    accuracy              double precision not null,
    accuracy_lower_bound  double precision not null,
    avg_cost_usd          double precision not null,
    p95_latency_ms        double precision,
    graded                int not null,
    meets_threshold       boolean not null,
    primary key (version, tier, rank),
    unique (version, tier, model)
);

create table publish_skips (
    run_id       text primary key references runs on delete cascade,
    reason       text not null,
    occurred_at  timestamptz not null
);

create table publish_skip_tiers (
    run_id  text not null references publish_skips on delete cascade,
    tier    text not null,
    primary key (run_id, tier)
);

create table classifier_winners (
    run_id          text primary key references runs on delete cascade,
    model           text not null,
    accuracy        double precision not null,
    avg_cost_usd    double precision,
    p95_latency_ms  double precision,
    reason          text not null,
    published_at    timestamptz not null,
    event_id        text not null
);
create index classifier_winners_published on classifier_winners (published_at);

-- decisions ----------------------------------------------------------------------------

create table decisions (
    decision_id              text primary key,
    event_id                 text not null,
    conversation_id          text not null,
    model                    text,
    reasoning_effort         text,
    tier                     text,
    sticky                   boolean not null,
    null_reason              text,
    classifier_model         text not null,
    classifier_cost_usd      double precision,
    classification_fallback  boolean not null,
    table_version            text,
    latency_ms               double precision not null,
    decided_at               timestamptz not null
);
create index decisions_decided on decisions (decided_at);

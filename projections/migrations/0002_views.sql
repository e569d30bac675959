-- Read models for analysts and services. Views only: they always agree with the tables.

create view run_history as
select
    r.run_id,
    r.kind,
    r.force,
    r.started_at,
    case when c.run_id is null then 'running' else 'completed' end as status,
    (select count(*) from run_models m where m.run_id = r.run_id and m.disposition = 'enqueued')
        as models_enqueued,
    (select count(*) from run_models m where m.run_id = r.run_id and m.disposition = 'carried')
        as models_carried,
    f.jobs,
    f.expected_results,
    (select count(*) from case_results cr where cr.run_id = r.run_id) as results_projected,
    c.graded,
    c.ungraded,
    c.completed_at,
    (select sum(cr.cost_usd) from case_results cr where cr.run_id = r.run_id) as spend_usd,
    case
        when t.version is not null then 'published'
        when s.run_id is not null then 'publish_skipped'
        when w.run_id is not null then 'winner'
    end as outcome,
    t.version as table_version,
    s.reason as skip_reason,
    w.model as classifier_winner,
    r.min_accuracy,
    r.switch_cost_factor,
    r.acceptance
from runs r
left join run_fanouts f on f.run_id = r.run_id
left join run_completions c on c.run_id = r.run_id
left join routing_tables t on t.run_id = r.run_id
left join publish_skips s on s.run_id = r.run_id
left join classifier_winners w on w.run_id = r.run_id;

create view model_accuracy_by_tier as
select
    r.started_at,
    ms.run_id,
    r.kind,
    ms.model,
    ms.tier,
    ms.accuracy,
    ms.accuracy_lower_bound,
    ms.graded,
    ms.avg_cost_usd,
    ms.p95_latency_ms,
    ms.timeouts,
    ms.carried,
    coalesce(ms.source_run_id, ms.run_id) as measured_in_run
from model_summaries ms
join runs r on r.run_id = ms.run_id;

create view decision_mix as
select
    date_trunc('day', d.decided_at) as day,
    coalesce(d.tier, '(none)') as tier,
    coalesce(d.model, '(null decision)') as model,
    count(*) as decisions,
    count(*) filter (where d.sticky) as sticky,
    count(*) filter (where d.classification_fallback) as fallback_classifications,
    sum(d.classifier_cost_usd) as classifier_cost_usd,
    avg(d.latency_ms) as avg_latency_ms
from decisions d
group by 1, 2, 3;

create view live_routing_table as
select c.*
from routing_table_candidates c
where c.version = (
    select version from routing_tables order by published_at desc, version desc limit 1
);

create view live_config as
select *
from benchmark_configs
where config_id = (
    select config_id from benchmark_configs order by saved_at desc, config_id desc limit 1
);

create view live_classifier_winner as
select *
from classifier_winners
order by published_at desc, run_id desc
limit 1;

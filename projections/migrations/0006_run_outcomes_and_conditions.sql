-- A run that measured nothing is not "completed" (issue 16.6): RunCompleted says whether the
-- run completed or failed, and why it failed; run_history shows both.
alter table run_completions
    add column status text not null default 'completed' check (status in ('completed', 'failed')),
    add column failure_reason text;

drop view run_history;

create view run_history as
select
    r.run_id,
    r.kind,
    r.force,
    r.started_at,
    case when c.run_id is null then 'running' else c.status end as status,
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
    r.acceptance,
    c.failure_reason
from runs r
left join run_fanouts f on f.run_id = r.run_id
left join run_completions c on c.run_id = r.run_id
left join routing_tables t on t.run_id = r.run_id
left join publish_skips s on s.run_id = r.run_id
left join classifier_winners w on w.run_id = r.run_id;


-- What a run measured under (issue 16.3): the provider endpoint, the simulated provider's
-- latency scale and /decide's classifier deadline; `provenroute serve` compares them with
-- the provider it calls itself.
alter table runs
    add column provider_base_url text,
    add column sim_latency_scale double precision,
    add column classifier_deadline_ms int;

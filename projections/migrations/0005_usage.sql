-- Per-user usage (issue 16.12): what each gateway user's classifier calls cost, per day.
-- DecisionMade carries the user (request hint) and how the classifier call ended; calls
-- that timed out or failed were attempted and may be billed, known cost or not. A
-- redelivered decision is one row (decision_id is the key, the first delivery wins).

alter table decisions
    add column user_id text,
    add column classifier_outcome text not null default 'not_called';
create index decisions_user on decisions (user_id, decided_at);

-- Usage per (UTC day, user) from `since` on, for one user or all (null user: not given).
create function usage_by_user_day_since(since timestamptz, only_user text default null)
returns table (
    day                  date,
    user_id              text,
    decisions            bigint,
    classifier_calls     bigint,
    unpriced_calls       bigint,
    classifier_cost_usd  double precision
)
language sql stable
as $$
    select
        (d.decided_at at time zone 'UTC')::date,
        d.user_id,
        count(*),
        count(*) filter (where d.classifier_outcome in ('ok', 'fallback', 'timeout', 'error')),
        count(*) filter (
            where d.classifier_outcome in ('ok', 'fallback', 'timeout', 'error')
              and d.classifier_cost_usd is null
        ),
        coalesce(sum(d.classifier_cost_usd), 0)
    from decisions d
    where d.decided_at >= since and (only_user is null or d.user_id = only_user)
    group by 1, 2
    order by 1, 2 nulls last
$$;

create view usage_by_user_day as
select * from usage_by_user_day_since('-infinity');

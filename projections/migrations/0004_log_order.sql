-- "Latest" config, override, routing table and classifier winner follow the log, not the
-- worker's clock (issue 16.7). Each row records where its event sits in the log; within a
-- partition the offset decides. Configs and overrides share one partition (the admin
-- key), so for them the order is the log's. Tables and winners live in their run's
-- partition, and Kafka orders nothing across partitions: there, the running maximum of
-- the publish time along each partition's log decides (`log_time`), so a clock that steps
-- back never reorders a partition's own facts. Rows projected before this migration have
-- no position and keep their clock order (a replay fills the positions in).

alter table benchmark_configs add column log_partition int, add column log_offset bigint;
alter table classifier_overrides add column log_partition int, add column log_offset bigint;
alter table routing_tables add column log_partition int, add column log_offset bigint;
alter table classifier_winners add column log_partition int, add column log_offset bigint;

-- <table>_in_log_order: the table plus log_time and log_rank (1 = first in the log).
do $$
declare
    t record;
begin
    for t in select * from (values
        ('benchmark_configs', 'saved_at', 'config_id'),
        ('classifier_overrides', 'set_at', 'event_id'),
        ('routing_tables', 'published_at', 'version'),
        ('classifier_winners', 'published_at', 'run_id')
    ) as v (name, stamped, id)
    loop
        execute format(
            'create view %1$I as
             select x.*, row_number() over (
                 order by x.log_time, x.log_partition nulls first, x.log_offset nulls first, x.%4$I
             ) as log_rank
             from (
                 select r.*, max(r.%3$I) over (
                     partition by r.log_partition
                     order by r.log_offset nulls first, r.%3$I, r.%4$I
                 ) as log_time
                 from %2$I r
             ) x',
            t.name || '_in_log_order', t.name, t.stamped, t.id
        );
    end loop;
end
$$;

create or replace view live_routing_table as
select c.*
from routing_table_candidates c
where c.version = (
    select version from routing_tables_in_log_order order by log_rank desc limit 1
);

create or replace view live_config as
select *
from benchmark_configs
where config_id = (
    select config_id from benchmark_configs_in_log_order order by log_rank desc limit 1
);

create or replace view live_classifier_winner as
select w.run_id, w.model, w.accuracy, w.avg_cost_usd, w.p95_latency_ms, w.reason,
       w.published_at, w.event_id, w.log_partition, w.log_offset
from classifier_winners_in_log_order w
order by w.log_rank desc
limit 1;

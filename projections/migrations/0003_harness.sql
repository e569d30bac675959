-- The agent harness is part of what a decider run measures (issue 15): the config and the
-- run snapshot name it, and so does each summary and each routing-table cell.
alter table benchmark_configs add column decider_harness text not null default 'builtin';
alter table runs add column decider_harness text not null default 'builtin';
alter table model_summaries add column harness text;
alter table routing_table_candidates add column harness text not null default 'builtin';

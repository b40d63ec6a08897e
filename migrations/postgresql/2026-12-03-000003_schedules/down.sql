DROP INDEX schedule_runs_running;
DROP TABLE schedule_runs;
DROP TABLE schedules;

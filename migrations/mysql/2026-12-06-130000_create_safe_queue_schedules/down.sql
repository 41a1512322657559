DROP TABLE safe_queue_schedules;

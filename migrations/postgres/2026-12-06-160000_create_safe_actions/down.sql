DROP TABLE safe_actions;

-- A write that must touch an exact number of rows (an instance's update at the version
-- the unit read, a task's update) checks it in the statement itself:
--   WITH w AS (UPDATE ... RETURNING 1) SELECT cairn_expect_rows((SELECT count(*) FROM w), 1)
-- so a mismatch is an error of that statement, which aborts the transaction. The unit
-- sends such writes together with its next statement (pipelined, see src/conn.rs); a
-- count checked by the client afterwards would come too late to stop a COMMIT sent in
-- the same round trip.
CREATE FUNCTION cairn_expect_rows(got bigint, want bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF got <> want THEN
        RAISE EXCEPTION 'a write touched % rows, not %', got, want USING ERRCODE = 'CR001';
    END IF;
    RETURN got;
END
$$;

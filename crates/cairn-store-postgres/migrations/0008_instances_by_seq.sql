-- Pages of a namespace's instances in order (`ls`, and pages filtered by state or label)
-- walk this index and stop at the page's end, instead of sorting every instance of the
-- namespace.
CREATE INDEX instances_by_seq ON instances (namespace, seq);

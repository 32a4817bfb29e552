package sqlname

import "testing"

func TestQuery(t *testing.T) {
	n := Names{Prefix: "app_", Schema: "Jobs"}
	in := `SELECT 'ch_pgqueuer', x::pgqueuer_status FROM pgqueuer JOIN pgqueuer_log ON true -- pgqueuer_log_job_id_status`
	want := `SELECT 'ch_pgqueuer', x::"Jobs".app_pgqueuer_status FROM "Jobs".app_pgqueuer JOIN "Jobs".app_pgqueuer_log ON true -- pgqueuer_log_job_id_status`
	if got := n.Query(in); got != want {
		t.Fatalf("Query:\n got %s\nwant %s", got, want)
	}
	if got := (Names{}).Query(in); got != in {
		t.Fatalf("default names changed the query: %s", got)
	}
}

func TestDDL(t *testing.T) {
	n := Names{Prefix: "app_"}
	in := `CREATE INDEX pgqueuer_log_created ON pgqueuer_log (created); PERFORM pg_notify('ch_pgqueuer'); CREATE TRIGGER tg_pgqueuer_changed EXECUTE FUNCTION fn_pgqueuer_changed();`
	want := `CREATE INDEX app_pgqueuer_log_created ON app_pgqueuer_log (created); PERFORM pg_notify('app_ch_pgqueuer'); CREATE TRIGGER app_tg_pgqueuer_changed EXECUTE FUNCTION app_fn_pgqueuer_changed();`
	if got := n.DDL(in); got != want {
		t.Fatalf("DDL:\n got %s\nwant %s", got, want)
	}
}

func TestQuoteIdent(t *testing.T) {
	for in, want := range map[string]string{"abc_1": "abc_1", "Abc": `"Abc"`, `a"b`: `"a""b"`, "1a": `"1a"`, "": `""`} {
		if got := QuoteIdent(in); got != want {
			t.Errorf("QuoteIdent(%q) = %s, want %s", in, got, want)
		}
	}
}

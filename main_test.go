package pgq_test

import (
	"testing"

	"github.com/pgq-dev/pgq/pgqtest"
)

func TestMain(m *testing.M) { pgqtest.Main(m) }

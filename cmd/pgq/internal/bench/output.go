package bench

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
)

// ptr turns a benchmark's (result, error) into (pointer to result, error).
func ptr[T any](v T, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return &v, nil
}

var settingsType = reflect.TypeFor[Settings]()

// settingsOf returns the Settings field of the struct result points to, or
// nil.
func settingsOf(result any) *Settings {
	v := reflect.ValueOf(result)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	for i := range v.Elem().NumField() {
		if f := v.Elem().Field(i); f.Type() == settingsType {
			return f.Addr().Interface().(*Settings)
		}
	}
	return nil
}

// printTable prints a result as "key  value" lines named like its JSON
// keys (nested objects as parent.key), with plan texts in blocks after
// the table.
func printTable(w io.Writer, name string, result any) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "pgq bench %s\n", name)
	var blocks []string
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			f, fv := t.Field(i), v.Field(i)
			key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if key == "" || key == "-" {
				key = f.Name
			}
			if f.Anonymous {
				walk(prefix, fv)
				continue
			}
			if f.Tag.Get("table") == "-" { // printed otherwise
				continue
			}
			key = prefix + key
			tag := f.Tag.Get("json")
			switch {
			case fv.IsZero() && (strings.Contains(tag, "omitempty") || strings.Contains(tag, "omitzero")):
			case fv.Type() == statementsType:
				if fv.Len() > 0 {
					blocks = append(blocks, statementsBlock(key, fv.Interface().([]StatementTime)))
				}
			case fv.Kind() == reflect.Struct:
				walk(key+".", fv)
			case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
				for j := range fv.Len() {
					walk(fmt.Sprintf("%s[%d].", key, j), fv.Index(j))
				}
			case fv.Kind() == reflect.String && strings.Contains(fv.String(), "\n"):
				blocks = append(blocks, fmt.Sprintf("%s:\n    %s\n", key,
					strings.ReplaceAll(fv.String(), "\n", "\n    ")))
			default:
				fmt.Fprintf(tw, "  %s\t%v\n", key, fv.Interface())
			}
		}
	}
	v := reflect.ValueOf(result)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	walk("", v)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, b := range blocks {
		if _, err := fmt.Fprintf(w, "\n%s", b); err != nil {
			return err
		}
	}
	return nil
}

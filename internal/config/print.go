package config

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"time"

	yamlv3 "go.yaml.in/yaml/v3"
)

// YAML renders the config with its koanf key names, sections in the order
// Config declares them, for `kiln config print`. Loading the output as a
// config file gives the same config back.
func (c *Config) YAML() ([]byte, error) {
	n, err := yamlNode(reflect.ValueOf(*c))
	if err != nil {
		return nil, fmt.Errorf("config: print: %w", err)
	}
	var buf bytes.Buffer
	enc := yamlv3.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("config: print: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: print: %w", err)
	}
	return buf.Bytes(), nil
}

func yamlNode(v reflect.Value) (*yamlv3.Node, error) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return &yamlv3.Node{Kind: yamlv3.ScalarNode, Tag: "!!null", Value: "null"}, nil
		}
		v = v.Elem()
	}
	if v.Type() == durationType {
		return scalar(time.Duration(v.Int()).String())
	}
	switch v.Kind() {
	case reflect.Struct:
		if n := buildNode(v.Type()); n.kind == leafKind {
			return scalar(v.Interface())
		}
		m := &yamlv3.Node{Kind: yamlv3.MappingNode}
		if err := addStructFields(m, v); err != nil {
			return nil, err
		}
		return m, nil
	case reflect.Map:
		m := &yamlv3.Node{Kind: yamlv3.MappingNode}
		keys := make([]string, 0, v.Len())
		vals := map[string]reflect.Value{}
		for it := v.MapRange(); it.Next(); {
			k := fmt.Sprint(it.Key().Interface())
			keys = append(keys, k)
			vals[k] = it.Value()
		}
		sort.Strings(keys)
		for _, k := range keys {
			val, err := yamlNode(vals[k])
			if err != nil {
				return nil, err
			}
			m.Content = append(m.Content, &yamlv3.Node{Kind: yamlv3.ScalarNode, Value: k}, val)
		}
		return m, nil
	case reflect.Slice, reflect.Array:
		s := &yamlv3.Node{Kind: yamlv3.SequenceNode}
		for i := range v.Len() {
			e, err := yamlNode(v.Index(i))
			if err != nil {
				return nil, err
			}
			s.Content = append(s.Content, e)
		}
		if len(s.Content) == 0 {
			s.Style = yamlv3.FlowStyle
		}
		return s, nil
	}
	return scalar(v.Interface())
}

func addStructFields(m *yamlv3.Node, v reflect.Value) error {
	for f := range fieldsOf(v.Type()) {
		fv := v.Field(f.index)
		if f.squash && fv.Kind() == reflect.Struct {
			if err := addStructFields(m, fv); err != nil {
				return err
			}
			continue
		}
		val, err := yamlNode(fv)
		if err != nil {
			return fmt.Errorf("%s: %w", f.key, err)
		}
		m.Content = append(m.Content, &yamlv3.Node{Kind: yamlv3.ScalarNode, Value: f.key}, val)
	}
	return nil
}

func scalar(v any) (*yamlv3.Node, error) {
	var n yamlv3.Node
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	return &n, nil
}

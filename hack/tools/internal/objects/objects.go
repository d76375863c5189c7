// Package objects reads Kubernetes objects for the helpers' commands.
package objects

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Read decodes every object on r, expanding Lists, the way the API
// machinery decodes unstructured objects (integers as int64).
func Read(r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := json.NewDecoder(r)
	var out []*unstructured.Unstructured
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("reading JSON: %w", err)
		}
		var head struct {
			Kind  string            `json:"kind"`
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			return nil, fmt.Errorf("not a JSON object: %w", err)
		}
		if strings.HasSuffix(head.Kind, "List") && head.Items != nil {
			list := &unstructured.UnstructuredList{}
			if err := list.UnmarshalJSON(raw); err != nil {
				return nil, fmt.Errorf("decoding %s: %w", head.Kind, err)
			}
			for i := range list.Items {
				out = append(out, &list.Items[i])
			}
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(bytes.TrimSpace(raw)); err != nil {
			return nil, fmt.Errorf("decoding object: %w", err)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("no object on stdin")
	}
	return out, nil
}

// OneLine keeps one record a line: a message's tabs and newlines become spaces.
func OneLine(s string) string {
	return strings.NewReplacer("\t", " ", "\r", " ", "\n", " ").Replace(s)
}

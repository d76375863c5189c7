// Command tco-kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus,
// the health model of Flux, kpt and cli-utils) computes for Kubernetes
// objects.
//
// It reads JSON on stdin: one object, a List (kubectl get -o json), or a
// stream of either. For each object it prints
//
//	namespace/name<TAB>status<TAB>message
//
// with status one of InProgress, Failed, Current, Terminating, NotFound,
// Unknown, exactly as status.Compute returns it.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: tco-kstatus < objects.json")
		os.Exit(2)
	}
	objects, err := readObjects(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tco-kstatus:", err)
		os.Exit(1)
	}
	for _, u := range objects {
		res, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tco-kstatus: %s/%s: %v\n", u.GetNamespace(), u.GetName(), err)
			os.Exit(1)
		}
		fmt.Printf("%s/%s\t%s\t%s\n", u.GetNamespace(), u.GetName(), res.Status, oneLine(res.Message))
	}
}

// readObjects decodes every object on r, expanding Lists, the way the API
// machinery decodes unstructured objects (integers as int64).
func readObjects(r io.Reader) ([]*unstructured.Unstructured, error) {
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

// oneLine keeps one record a line: a message's tabs and newlines become spaces.
func oneLine(s string) string {
	return strings.NewReplacer("\t", " ", "\r", " ", "\n", " ").Replace(s)
}

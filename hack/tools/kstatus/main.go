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
	"fmt"
	"os"

	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"tco.local/hack-tools/internal/objects"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: tco-kstatus < objects.json")
		os.Exit(2)
	}
	objs, err := objects.Read(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tco-kstatus:", err)
		os.Exit(1)
	}
	for _, u := range objs {
		res, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tco-kstatus: %s/%s: %v\n", u.GetNamespace(), u.GetName(), err)
			os.Exit(1)
		}
		fmt.Printf("%s/%s\t%s\t%s\n", u.GetNamespace(), u.GetName(), res.Status, objects.OneLine(res.Message))
	}
}

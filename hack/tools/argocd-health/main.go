// Command tco-argocd-health runs an Argo CD resource health script (Lua) on
// Kubernetes objects the way Argo CD runs a custom health check from
// argocd-cm: in gopher-lua (Lua 5.1), in a fresh state per object, with only
// the base, table and package libraries open (and `require("os")` giving
// os.time and os.date alone), unless -open-libs mirrors the override's
// `useOpenLibs: true`; the live object is the global table `obj`, decoded
// from JSON; the script has one second; it returns a table whose `status`
// must be one of Argo CD's health codes.
//
//	tco-argocd-health [-open-libs] script.lua < objects.json
//
// stdin holds one object, a List (kubectl get -o json), or a stream of
// either. For each object it prints
//
//	status<TAB>message
//
// (a script returning nil prints "<none>", as Argo CD then assesses no
// health). A script error, or a return value Argo CD refuses, is an error:
// the command says which object and exits 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"

	"tco.local/hack-tools/internal/objects"
)

// The health codes Argo CD accepts from a script; another one reads Unknown.
var healthCodes = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true,
	"Healthy": true, "Degraded": true, "Missing": true,
}

const invalidHealthStatus = "Lua returned an invalid health status"

func main() {
	openLibs := flag.Bool("open-libs", false, "open every standard library (Argo CD's useOpenLibs: true)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: tco-argocd-health [-open-libs] script.lua < objects.json")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	script, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "tco-argocd-health:", err)
		os.Exit(1)
	}
	objs, err := objects.Read(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tco-argocd-health:", err)
		os.Exit(1)
	}
	for _, u := range objs {
		status, message, err := health(string(script), u.Object, *openLibs)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tco-argocd-health: %s/%s: %v\n", u.GetNamespace(), u.GetName(), err)
			os.Exit(1)
		}
		fmt.Printf("%s\t%s\n", status, objects.OneLine(message))
	}
}

// health runs the script on one object.
func health(script string, object map[string]any, openLibs bool) (string, string, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", fmt.Errorf("opening %s: %w", lib.name, err)
		}
	}
	if !openLibs {
		if err := preloadSafeOs(L); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", toLua(L, object))

	fn, err := L.LoadString(script)
	if err != nil {
		return "", "", err
	}
	L.Push(fn)
	if err := L.PCall(0, lua.MultRet, nil); err != nil {
		return "", "", err
	}
	ret := L.Get(-1)
	switch ret.Type() {
	case lua.LTNil:
		return "<none>", "", nil
	case lua.LTTable:
	default:
		return "", "", fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	hs := ret.(*lua.LTable)
	status, err := stringField(hs, "status")
	if err != nil {
		return "", "", err
	}
	message, err := stringField(hs, "message")
	if err != nil {
		return "", "", err
	}
	if !healthCodes[status] {
		return "Unknown", invalidHealthStatus, nil
	}
	return status, message, nil
}

// stringField reads a field Argo CD decodes into a Go string: absent is
// empty, anything but a string is an error.
func stringField(t *lua.LTable, key string) (string, error) {
	switch v := t.RawGetString(key).(type) {
	case *lua.LNilType:
		return "", nil
	case lua.LString:
		return string(v), nil
	default:
		return "", fmt.Errorf("health %s is a %s, not a string", key, v.Type())
	}
}

// preloadSafeOs makes `require("os")` return a table of os.time and os.date
// only, as Argo CD does for scripts without useOpenLibs; there is no global
// `os`. Both functions are gopher-lua's own, taken from its os library,
// which is then unloaded.
func preloadSafeOs(L *lua.LState) error {
	if err := L.CallByParam(lua.P{Fn: L.NewFunction(lua.OpenOs), NRet: 1, Protect: true}, lua.LString(lua.OsLibName)); err != nil {
		return fmt.Errorf("opening os: %w", err)
	}
	full, ok := L.Get(-1).(*lua.LTable)
	L.Pop(1)
	if !ok {
		return errors.New("gopher-lua's os library is not a table")
	}
	timeFn, dateFn := full.RawGetString("time"), full.RawGetString("date")
	L.SetGlobal(lua.OsLibName, lua.LNil)
	L.SetField(L.GetField(L.Get(lua.RegistryIndex), "_LOADED"), lua.OsLibName, lua.LNil)
	L.PreloadModule(lua.OsLibName, func(L *lua.LState) int {
		mod := L.NewTable()
		mod.RawSetString("time", timeFn)
		mod.RawSetString("date", dateFn)
		L.Push(mod)
		return 1
	})
	return nil
}

// toLua turns a decoded object into Lua values as Argo CD hands it to a
// script: numbers (int64 or float64 from the API machinery) as Lua numbers,
// arrays as sequences, objects as tables, null as nil.
func toLua(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case json.Number:
		return lua.LString(v)
	case []any:
		t := L.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]any:
		t := L.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(L, item))
		}
		return t
	}
	return lua.LNil
}

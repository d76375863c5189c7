{{- define "tenant.labels" -}}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
capacity.tenancy.dev/subscription: {{ .root.Values.subscription }}
capacity.tenancy.dev/tenant: {{ .root.Values.tenant | quote }}
capacity.tenancy.dev/module: {{ .module.name }}
{{- end -}}

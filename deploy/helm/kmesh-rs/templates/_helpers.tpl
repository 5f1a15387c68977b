{{/* Labels on every object: the same part-of as the kustomize base, plus Helm's. */}}
{{- define "kmesh-rs.labels" -}}
app.kubernetes.io/part-of: kmesh-rs
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The mesh source, checked once: a typo must not deploy an agent without one. */}}
{{- define "kmesh-rs.meshSource" -}}
{{- if not (has .Values.meshSource (list "file" "istio")) -}}
{{- fail (printf "meshSource is %q; it must be \"file\" (the mesh value, as a ConfigMap) or \"istio\" (xDS from istiod)" .Values.meshSource) -}}
{{- end -}}
{{- .Values.meshSource -}}
{{- end }}

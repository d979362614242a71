{{/* The release's base name: every object of the chart starts with it. */}}
{{- define "bkf.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bkf.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "bkf.labels" -}}
app.kubernetes.io/name: buildkit-fleet
{{ include "bkf.releaseLabels" . }}
{{- end -}}

{{- define "bkf.releaseLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: include with (list $ "webhook"). */}}
{{- define "bkf.selector" -}}
app.kubernetes.io/name: buildkit-fleet
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "bkf.webhookService" -}}{{ include "bkf.fullname" . }}-webhook{{- end -}}
{{- define "bkf.certSecret" -}}{{ .Values.certs.secretName | default (printf "%s-webhook-tls" (include "bkf.fullname" .)) }}{{- end -}}

{{/* The hardened security context every container of the chart runs with. */}}
{{- define "bkf.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "bkf.podSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Spread the replicas of a component over nodes when it can. */}}
{{- define "bkf.antiAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "bkf.selector" . | nindent 12 }}
{{- end -}}

{{/* policy/v1 from Kubernetes 1.21; policy/v1beta1 before. */}}
{{- define "bkf.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1" -}}policy/v1{{- else -}}policy/v1beta1{{- end -}}
{{- end -}}

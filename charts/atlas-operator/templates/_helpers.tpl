{{/* The chart's name, 63 characters at most (a label value). */}}
{{- define "atlas-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: object names start with it. */}}
{{- define "atlas-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "atlas-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "atlas-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "atlas-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "atlas-operator.labels" -}}
helm.sh/chart: {{ include "atlas-operator.chart" . }}
{{ include "atlas-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: atlas-operator
{{- end }}

{{- define "atlas-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "atlas-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "atlas-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "atlas-operator.runnerImage" -}}
{{- printf "%s:%s" .Values.runner.image.repository (.Values.runner.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The label selector as one string: a list of requirements is ANDed, as upstream's. */}}
{{- define "atlas-operator.labelSelector" -}}
{{- if kindIs "string" .Values.labelSelector }}
{{- .Values.labelSelector }}
{{- else }}
{{- join "," .Values.labelSelector }}
{{- end }}
{{- end }}

{{/*
The operator's rules in a namespace it watches. With leaseRules they are exactly the rules of
rbac/operator-clusterrole.yaml and rbac/operator-role.yaml (tests/chart.rs compares them).
*/}}
{{- define "atlas-operator.resourceRules" -}}
- apiGroups: ["db.atlasgo.io"]
  resources: ["atlasmigrations", "atlasschemas"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["db.atlasgo.io"]
  resources: ["atlasmigrations/status", "atlasschemas/status"]
  verbs: ["get", "patch", "update"]
# Patch: a Job made suspended is released once its credentials Secret exists.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Read: migration directories and schemas kept in ConfigMaps. Create and delete: the
# immutable inputs ConfigMaps made for inline dir.local and schema.sql/hcl.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Create only, never read, change or delete: the credentials Secret of a Job whose spec writes
# a URL or password inline (owned by the Job, deleted with it by the garbage collector).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
# A Job's pod that cannot start (a missing Secret) is reported from its status.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Why the Job controller cannot create a Job's pod (an admission policy, a quota) is only
# in its FailedCreate events: read for a Job that has no pod after a few seconds.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
{{- end }}

{{- define "atlas-operator.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update"]
{{- end }}

{{/* Pull secret names, comma-separated, from [{name: a}, {name: b}] (or plain names). */}}
{{- define "atlas-operator.secretNames" -}}
{{- $names := list }}
{{- range . }}
{{- $names = append $names (kindIs "string" . | ternary . (get . "name")) }}
{{- end }}
{{- join "," $names }}
{{- end }}

{{/*
The install-wide Atlas Cloud token's Secret as "name/key": atlasToken, else upstream's
extraEnvs entry ATLAS_TOKEN with a secretKeyRef. A literal token in values cannot reach the
Jobs (they read Secrets of their own namespace): refused with what to do instead.
*/}}
{{- define "atlas-operator.atlasToken" -}}
{{- $name := .Values.atlasToken.secretName -}}
{{- $key := .Values.atlasToken.key | default "ATLAS_TOKEN" -}}
{{- range .Values.extraEnvs }}
{{- if eq .name "ATLAS_TOKEN" }}
{{- if and .valueFrom .valueFrom.secretKeyRef }}
{{- if not $name }}
{{- $name = .valueFrom.secretKeyRef.name }}
{{- $key = .valueFrom.secretKeyRef.key | default "ATLAS_TOKEN" }}
{{- end }}
{{- else }}
{{- fail "extraEnvs: ATLAS_TOKEN must come from a Secret (valueFrom.secretKeyRef): the token is used by the migration Jobs, which run in each resource's namespace and read it from a Secret there; or set atlasToken.secretName" }}
{{- end }}
{{- end }}
{{- end }}
{{- if $name }}{{ printf "%s/%s" $name $key }}{{ end }}
{{- end }}

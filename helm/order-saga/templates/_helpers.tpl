{{- define "order-saga.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "order-saga.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "order-saga.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{ include "order-saga.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "order-saga.selectorLabels" -}}
app.kubernetes.io/name: {{ include "order-saga.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "order-saga.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "order-saga.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "order-saga.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The database URL from its Secret (required). */}}
{{- define "order-saga.databaseEnv" -}}
- name: ORDER_SAGA_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.database.existingSecret is required: a Secret holding the MySQL URL" .Values.secrets.database.existingSecret }}
      key: {{ .Values.secrets.database.key }}
{{- end -}}

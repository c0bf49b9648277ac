// The server's vocabulary, read once from /openapi.json rather than repeated here: job
// statuses (and which are final), job types, priorities, promote policies, the gallery's
// special label filters and its page size. A name the document lacks stops the dashboard with
// an error that says so, instead of a page quietly out of step with its server.

export const enums = {};

function need(value, where) {
  if (value === undefined || value === null) throw new Error(`/openapi.json lacks ${where}`);
  return value;
}

// {QUEUED: "queued", ...}: a status compared by name reads like the server's JobStatus.
const named = (values) => Object.freeze(Object.fromEntries(values.map((v) => [v.toUpperCase(), v])));

// The gallery's label filter: a class, or one of the titled constants (errors, no_face).
function specialLabels(doc) {
  const params = doc.paths?.["/ui/api/jobs/{job_id}/gallery"]?.get?.parameters || [];
  const label = params.find((p) => p.name === "label")?.schema?.anyOf || [];
  return Object.fromEntries(label.filter((s) => "const" in s).map((s) => [s.title, s.const]));
}

function read(doc) {
  const schemas = need(doc.components?.schemas, "components.schemas");
  const job = need(schemas.Job?.properties, "the Job schema");
  const statuses = need(job.status?.enum, "Job.status's enum");
  const priority = need(job.priority, "Job.priority");
  const gallery = doc.paths?.["/ui/api/jobs/{job_id}/gallery"]?.get?.parameters || [];
  const special = specialLabels(doc);
  return {
    statuses,
    STATUS: named(statuses),
    finished: need(schemas.FinishedStatus?.enum, "the FinishedStatus schema"),
    TRAIN: need(schemas.TrainRequest?.properties?.type?.const, "TrainRequest.type"),
    CLASSIFY: need(schemas.ClassifyRequest?.properties?.type?.const, "ClassifyRequest.type"),
    priorities: need(priority.enum, "Job.priority's enum"),
    defaultPriority: need(priority.default, "Job.priority's default"),
    promotePolicies: need(schemas.TrainRequest?.properties?.promote?.enum, "TrainRequest.promote"),
    ERRORS: need(special.errors, "the gallery's errors label"),
    NO_FACE: need(special.no_face, "the gallery's no_face label"),
    pageSize: need(gallery.find((p) => p.name === "limit")?.schema?.default, "the gallery's limit"),
  };
}

let loading = null;

// Fetch and read the document once; every later call shares that answer.
export function loadEnums() {
  loading ||= (async () => {
    const resp = await fetch("/openapi.json");  // public: no key needed
    if (!resp.ok) throw new Error(`/openapi.json: ${resp.status} ${resp.statusText}`);
    Object.assign(enums, read(await resp.json()));
    Object.freeze(enums);
  })().catch((e) => { loading = null; throw e; });  // a later page may try again
  return loading;
}

// A finished job's status never changes again.
export const isFinished = (status) => enums.finished.includes(status);

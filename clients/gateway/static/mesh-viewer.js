// The job page's 3D viewer: a mesh output (PLY or glTF binary) drawn with three.js, turned with the
// mouse (OrbitControls: drag to orbit, wheel to zoom, right-drag to pan), framed to fit, lit.
// three.js is vendored beside this file (static/three/, `make three`); the page's import map names it.
//
// `showMesh(box, url, mediaType)` fills `box` and reports in `box.dataset.viewer`: "loading", then
// "rendered" once the first frame is drawn, or "failed" with a message in the box (never a blank box).

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { PLYLoader } from "three/addons/loaders/PLYLoader.js";

export const BACKGROUND = 0xf3f4f6;  // the canvas's clear colour; a test counts pixels that differ
const MESH_COLOUR = 0x9ca3af;        // for a mesh without vertex colours

export async function showMesh(box, url, mediaType) {
  box.dataset.viewer = "loading";
  say(box, "loading the 3D mesh…");
  let view = null;
  try {
    const object = await load(url, mediaType);
    view = createView(box);
    view.scene.add(object);
    frame(view, object);
    view.render();
    requestAnimationFrame(() => { box.dataset.viewer = "rendered"; });
  } catch (error) {
    if (view) view.dispose();
    box.dataset.viewer = "failed";
    say(box, "Cannot show the 3D mesh here (" + (error && error.message || error) +
        "). The download link below still works.");
  }
}

async function load(url, mediaType) {
  if (mediaType === "model/ply") return plyMesh(await new PLYLoader().loadAsync(url));
  if (mediaType === "model/gltf-binary") return (await new GLTFLoader().loadAsync(url)).scene;
  throw new Error("no viewer for " + mediaType);
}

function plyMesh(geometry) {
  const vertices = geometry.getAttribute("position");
  if (!vertices || vertices.count === 0 || (geometry.index && geometry.index.count === 0))
    throw new Error("the mesh has no triangles");
  if (!geometry.getAttribute("normal")) geometry.computeVertexNormals();
  const coloured = geometry.hasAttribute("color");  // PLYLoader reads red/green/blue per vertex
  const material = new THREE.MeshStandardMaterial({
    color: coloured ? 0xffffff : MESH_COLOUR, vertexColors: coloured, roughness: 0.8, metalness: 0,
    side: THREE.DoubleSide,
  });
  return new THREE.Mesh(geometry, material);
}

/* A renderer, scene, camera (carrying a light, so the side in view is always lit) and controls. */
function createView(box) {
  const renderer = new THREE.WebGLRenderer({ antialias: true });  // throws without WebGL
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  renderer.setClearColor(BACKGROUND);
  const scene = new THREE.Scene();
  const camera = new THREE.PerspectiveCamera(40, 1, 0.01, 100);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x6b7280, 1.6), camera);
  const light = new THREE.DirectionalLight(0xffffff, 1.8);
  light.position.set(1, 1, 2);
  camera.add(light);
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.enableDamping = false;  // draw on demand: a frame per change, none while still
  const render = () => renderer.render(scene, camera);
  controls.addEventListener("change", render);
  const fit = () => {
    const width = box.clientWidth || 480, height = box.clientHeight || 360;
    renderer.setSize(width, height);
    camera.aspect = width / height;
    camera.updateProjectionMatrix();
    render();
  };
  box.replaceChildren(renderer.domElement);
  fit();
  const resizes = typeof ResizeObserver === "function" ? new ResizeObserver(fit) : null;
  if (resizes) resizes.observe(box);
  const dispose = () => { if (resizes) resizes.disconnect(); controls.dispose(); renderer.dispose(); };
  return { renderer, scene, camera, controls, render, dispose };
}

/* The camera at a distance that fits the object's bounding sphere in view, looking at its centre. */
function frame(view, object) {
  const sphere = bounds(object);
  if (!isFinite(sphere.radius) || sphere.radius <= 0) throw new Error("the mesh has no extent");
  const { camera, controls } = view;
  const fov = THREE.MathUtils.degToRad(camera.fov) / 2;
  const distance = sphere.radius / Math.sin(Math.min(fov, Math.atan(Math.tan(fov) * camera.aspect))) * 1.1;
  camera.position.copy(sphere.center).add(new THREE.Vector3(0.6, 0.45, 1).normalize().multiplyScalar(distance));
  camera.near = distance / 100;
  camera.far = distance * 100;
  camera.updateProjectionMatrix();
  controls.target.copy(sphere.center);
  controls.minDistance = sphere.radius * 0.2;
  controls.maxDistance = distance * 10;
  controls.update();
}

/* The union of the meshes' own bounding spheres, in world space: tighter than the sphere round the
   bounding box (a sphere in a box fills about half the view that the box's sphere would give it). */
function bounds(object) {
  object.updateMatrixWorld(true);
  const all = new THREE.Sphere();
  all.makeEmpty();
  object.traverse(node => {
    if (!node.isMesh) return;
    if (!node.geometry.boundingSphere) node.geometry.computeBoundingSphere();
    all.union(node.geometry.boundingSphere.clone().applyMatrix4(node.matrixWorld));
  });
  return all;
}

function say(box, message) {
  const line = document.createElement("p");
  line.className = "viewer-message";
  line.textContent = message;
  box.replaceChildren(line);
}

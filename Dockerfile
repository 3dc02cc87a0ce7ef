FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
EXPOSE 8000
# The web process; docker-compose.yml runs the migrations first and the workers with commands of their own.
CMD ["gunicorn", "studyapp.wsgi:application", "-c", "gunicorn.conf.py"]
